"""The environment variables: read at call time, defaults when unset, one-line errors naming the
variable for a bad value, and read nowhere but in sparse_tickets.settings."""

import ast
import importlib.util
from pathlib import Path

import pytest

import sparse_tickets
from sparse_tickets import settings

NAMES = (
    settings.BACKEND,
    settings.OPT_IN,
    settings.MODE,
    settings.COMPACT_BELOW,
    settings.CALIBRATION,
    settings.CPU_EXTENSION,
    settings.CUDA_EXTENSION,
    settings.CACHE,
    settings.DEBUG,
    settings.TRITON_INTERPRET,
)


@pytest.fixture
def clean(monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unset_variables_take_their_defaults(clean):
    assert settings.backend() is None
    assert settings.opt_in() == ""
    assert settings.mode() == "dense"
    assert settings.compact_below() is None
    assert settings.calibration() == "auto"
    assert settings.extension(settings.CPU_EXTENSION) == "auto"
    assert settings.extension(settings.CUDA_EXTENSION) == "auto"
    assert settings.cache_directory() is None
    assert settings.debug() is False
    assert settings.triton_interpret() is False


def test_each_value_is_read_when_asked_for_not_at_import(clean):
    clean.setenv(settings.BACKEND, " cpu ")
    clean.setenv(settings.OPT_IN, " triton,semi_structured ")
    clean.setenv(settings.MODE, "Compact")
    clean.setenv(settings.COMPACT_BELOW, "0.25")
    clean.setenv(settings.CALIBRATION, "0")
    clean.setenv(settings.CPU_EXTENSION, "1")
    clean.setenv(settings.CUDA_EXTENSION, "off")
    clean.setenv(settings.CACHE, "~/datasets")
    clean.setenv(settings.DEBUG, "1")
    clean.setenv(settings.TRITON_INTERPRET, "yes")
    assert settings.backend() == "cpu"
    assert settings.opt_in() == "triton,semi_structured"
    assert settings.mode() == "compact"
    assert settings.compact_below() == 0.25
    assert settings.calibration() == "off"
    assert settings.extension(settings.CPU_EXTENSION) == "force"
    assert settings.extension(settings.CUDA_EXTENSION) == "skip"
    assert settings.cache_directory() == Path("~/datasets").expanduser()
    assert settings.debug() is True
    assert settings.triton_interpret() is True
    clean.setenv(settings.MODE, "auto")  # a change while the process runs is seen at once
    assert settings.mode() == "auto"


@pytest.mark.parametrize(
    "name, value, read, expected",
    [
        (
            settings.MODE,
            "sparse",
            settings.mode,
            "SPARSE_TICKETS_MODE='sparse'; expected one of auto, dense, compact",
        ),
        (
            settings.COMPACT_BELOW,
            "2",
            settings.compact_below,
            "SPARSE_TICKETS_COMPACT_BELOW='2'; expected a density in [0, 1]",
        ),
        (
            settings.COMPACT_BELOW,
            "half",
            settings.compact_below,
            "SPARSE_TICKETS_COMPACT_BELOW='half'; expected a density in [0, 1]",
        ),
        (
            settings.COMPACT_BELOW,
            "nan",
            settings.compact_below,
            "SPARSE_TICKETS_COMPACT_BELOW='nan'; expected a density in [0, 1]",
        ),
        (
            settings.CALIBRATION,
            "sometimes",
            settings.calibration,
            "SPARSE_TICKETS_CALIBRATION='sometimes'; expected auto or off",
        ),
        (
            settings.CPU_EXTENSION,
            "always",
            lambda: settings.extension(settings.CPU_EXTENSION),
            "SPARSE_TICKETS_CPU_EXTENSION='always'; expected one of auto, skip (0), force (1)",
        ),
        (
            settings.CUDA_EXTENSION,
            "2",
            lambda: settings.extension(settings.CUDA_EXTENSION),
            "SPARSE_TICKETS_CUDA_EXTENSION='2'; expected one of auto, skip (0), force (1)",
        ),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_the_variable(clean, name, value, read, expected):
    clean.setenv(name, value)
    with pytest.raises(ValueError) as error:
        read()
    assert str(error.value) == expected


def test_every_variable_is_documented_in_the_module():
    documented = settings.__doc__
    assert all(f"``{name}``" in documented for name in NAMES)
    defined = {
        value for name, value in vars(settings).items() if name.isupper() and isinstance(value, str)
    }
    assert defined == set(NAMES)


def _package_files():
    roots = [Path(sparse_tickets.__file__).parent]
    kernels = importlib.util.find_spec("sparse_tickets.kernels")
    if kernels is not None:
        roots.append(Path(kernels.origin).parent)
    return [path for root in roots for path in root.rglob("*.py")]


def test_no_module_but_the_settings_names_a_variable_to_read_it():
    # A name used as a string of its own (os.environ["..."], a constant) outside the settings
    # module would be a second reader; mentions inside longer text (docs, messages) are fine.
    readers = sorted(
        f"{path.name}:{node.lineno} {node.value}"
        for path in _package_files()
        if path != Path(settings.__file__)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in NAMES
    )
    assert readers == []
