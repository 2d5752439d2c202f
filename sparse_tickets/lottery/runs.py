"""The run directory: where each artifact of a lottery-ticket run lives.

::

    <runs>/<model>-<dataset>-<hash>/
      hparams.json                 every hyperparameter (the hash is of these)
      .lock                        held by the command working in it (see locking.py)
      model.json                   the model's input shape and class count (from the data)
      name.json                    the run's name, when given one (--name)
      trial.log                    the output of a trial run by --trials (see trials.py)
      main/init.safetensors        the weights at iteration 0
      main/rewind_point.safetensors  the weights at the rewind iteration K (K > 0 only)
      <branch>/level_<L>/          branch: main, reinit, random_pruning
        masks.safetensors          the masks this level trains with
        start.safetensors          the weights it starts from (the ticket before training)
        checkpoint.pt              the latest in-level checkpoint (removed when done)
        trained.safetensors        the weights after training
        metrics.json, metrics.csv  written last: a level is done when metrics.json is valid
      instability/<branch>/level_<L>/iteration_<K>/   instability analysis (see instability.py)
        spawn/, copy_0/, copy_1/   levels as above: to iteration K, then two copies on from it
        path_<N>.json              the N-point linear path between the copies, and its barrier
      report/                      tables and plots (`sparse-tickets report`)

Every artifact has a ``.sha256`` file beside it (see :mod:`sparse_tickets.files`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .. import files
from .hparams import Hparams

HPARAMS = "hparams.json"
MODEL_SHAPE = "model.json"
NAME = "name.json"
MAIN = "main"
BRANCHES = ("main", "reinit", "random_pruning")


class RunError(ValueError):
    """A run directory that cannot be used as asked."""


class BadArtifact(RunError):
    """A stored file whose checksum matches but whose content cannot be what the run wrote
    (wrong shapes, NaN weights, masks of another level, missing keys): one line naming the
    file, what is wrong with it and what to do."""

    def __init__(self, path: Path, problem: str, remedy: str):
        super().__init__(f"{path}: {problem}; {remedy}")
        self.path, self.problem = Path(path), problem


class Diverged(RunError):
    """A level whose training diverged: nothing can be pruned from it or rewound to it."""


@dataclass(frozen=True)
class Level:
    """The files of one level of one branch."""

    directory: Path

    @property
    def masks(self) -> Path:
        return self.directory / "masks.safetensors"

    @property
    def start(self) -> Path:
        return self.directory / "start.safetensors"

    @property
    def trained(self) -> Path:
        return self.directory / "trained.safetensors"

    @property
    def metrics(self) -> Path:
        return self.directory / "metrics.json"

    @property
    def metrics_csv(self) -> Path:
        return self.directory / "metrics.csv"

    @property
    def checkpoint(self) -> Path:
        return self.directory / "checkpoint.pt"

    @property
    def outputs(self) -> tuple[Path, ...]:
        """The files a finished level has (a diverged one has no trained weights)."""
        return self.masks, self.start, self.trained, self.metrics_csv, self.metrics

    def done(self) -> bool:
        """Every file of a finished level is there and matches its checksum."""
        return not self.missing()

    def missing(self) -> list[Path]:
        """The files of a finished level that are absent or do not match their checksum."""
        return [path for path in self.outputs if not files.artifact_exists(path)]

    def read_metrics(self) -> dict | None:
        """The level's metrics.json (None when absent or not matching its checksum)."""
        try:
            return files.read_json(self.metrics)
        except files.DamagedArtifact as error:
            raise BadArtifact(self.metrics, error.reason, redo_remedy(self)) from None

    def write_metrics(self, metrics: dict) -> None:
        """The CSV first: metrics.json is the level's completion mark."""
        buffer = io.StringIO()
        rows = metrics["evaluations"]
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        files.write_artifact(self.metrics_csv, buffer.getvalue().encode())
        files.write_json(self.metrics, metrics)


def redo_remedy(level: Level) -> str:
    """What to do about a bad file of a finished level: the user decides to redo it."""
    return (
        f"delete it, then run the run's `sparse-tickets imp` (or `train`) command again to "
        f"redo {level.directory.parent.name}/{level.directory.name}"
    )


@dataclass(frozen=True)
class Instability:
    """The files of one instability analysis: the spawn point's training (from the level's
    start to iteration K, skipped when K is the start), the two copies trained on from it, and
    one evaluation of the linear path between them per number of points."""

    directory: Path

    @property
    def spawn(self) -> Level:
        return Level(self.directory / "spawn")

    def copy(self, index: int) -> Level:
        return Level(self.directory / f"copy_{index}")

    def path(self, points: int) -> Path:
        return self.directory / f"path_{points}.json"


def _as_hparams(stored: dict):
    """A stored hparams.json as Hparams (fields added since it was written take their
    defaults); None when it holds fields this version does not know."""
    try:
        return Hparams.from_dict(stored)
    except (TypeError, ValueError):
        return None


def _read_json(path: Path):
    """A JSON artifact of the run (None when absent); a damaged one is named."""
    try:
        return files.read_json(path)
    except files.DamagedArtifact as error:
        raise BadArtifact(path, error.reason, "delete it and rerun the run's command") from None


def _model_shape_problem(shape) -> str | None:
    def positive(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not isinstance(shape, dict):
        return f"holds a {type(shape).__name__}; expected an object"
    input_shape = shape.get("input_shape")
    if not isinstance(input_shape, list) or not input_shape or not all(map(positive, input_shape)):
        return f"has input_shape {input_shape!r}; expected a list of positive integers"
    if not positive(shape.get("num_classes")):
        return f"has num_classes {shape.get('num_classes')!r}; expected a positive integer"
    return None


@dataclass(frozen=True)
class Run:
    directory: Path

    @classmethod
    def make_directory(cls, runs_directory: Path, hp: Hparams) -> Run:
        """The run of ``hp`` under ``runs_directory``, its directory made if new (nothing
        written in it yet). A directory of the name runs had before the branch fields left
        the hash (:meth:`Hparams.legacy_run_name`) is that run, and is used."""
        run = cls(Path(runs_directory) / hp.run_name())
        if not run.directory.exists():
            legacy = cls.existing(runs_directory, hp)  # here only the legacy name can hold it
            if legacy is not None:
                return legacy
        try:
            files.make_directory(run.directory)
        except (FileExistsError, NotADirectoryError):
            raise RunError(
                f"cannot make the run directory {run.directory}: a file is in the "
                f"way; expected --runs-dir to be a directory"
            ) from None
        return run

    @classmethod
    def existing(cls, runs_directory: Path, hp: Hparams) -> Run | None:
        """The run of ``hp`` already made under ``runs_directory`` (its hparams.json written),
        under its name or the legacy one; None when there is none."""
        for name in (hp.run_name(), hp.legacy_run_name()):
            directory = Path(runs_directory) / name
            if (directory / HPARAMS).is_file():
                return cls(directory)
        return None

    @classmethod
    def create(cls, runs_directory: Path, hp: Hparams) -> Run:
        """The run of ``hp`` under ``runs_directory``, made if new; an existing directory of the
        same name must hold the same main-branch hyperparameters. Its hparams.json records
        the branches the latest command asked for (a branch added to a finished run)."""
        run = cls.make_directory(runs_directory, hp)
        stored = _read_json(run.directory / HPARAMS)
        stored_hp = _as_hparams(stored) if stored is not None else None
        if stored is None or (
            stored_hp is not None
            and stored_hp != hp
            and stored_hp.main_branch() == hp.main_branch()
        ):
            files.write_json(run.directory / HPARAMS, hp.as_dict())
        elif stored_hp is None or stored_hp.main_branch() != hp.main_branch():
            raise RunError(
                f"{run.directory} holds other hyperparameters than its name's hash "
                f"says; move it away or pass another --runs-dir"
            )
        return run

    @classmethod
    def open(cls, directory: Path) -> Run:
        """An existing run directory (for report and export)."""
        run = cls(Path(directory))
        if run.directory.exists() and not run.directory.is_dir():
            raise RunError(
                f"{run.directory} is not a directory; expected a run directory made "
                f"by `sparse-tickets imp` or `train`"
            )
        if not run.directory.is_dir():
            raise RunError(f"run directory {run.directory} does not exist")
        if _read_json(run.directory / HPARAMS) is None:
            raise RunError(
                f"{run.directory} has no valid {HPARAMS}; expected a directory made "
                f"by `sparse-tickets imp` or `train`"
            )
        return run

    @property
    def hparams(self) -> Hparams:
        path = self.directory / HPARAMS
        stored = _read_json(path)
        hp = _as_hparams(stored) if isinstance(stored, dict) else None
        if hp is None:
            raise BadArtifact(
                path,
                "holds no hyperparameters this version knows",
                (
                    "expected the hparams.json that `sparse-tickets imp` wrote: restore it, or "
                    "start the run again in a new directory"
                ),
            )
        return hp

    @property
    def model_shape(self) -> dict:
        """``{"input_shape": [C, H, W], "num_classes": N}`` of the run's model."""
        path = self.directory / MODEL_SHAPE
        shape = _read_json(path)
        if shape is None:
            raise RunError(f"{self.directory} has no valid {MODEL_SHAPE}; rerun its command")
        problem = _model_shape_problem(shape)
        if problem:
            raise BadArtifact(
                path,
                problem,
                "delete it and rerun the run's command (it is written again from the data)",
            )
        return shape

    def record_model_shape(self, input_shape, num_classes: int) -> None:
        shape = {"input_shape": list(input_shape), "num_classes": int(num_classes)}
        try:
            stored = files.read_json(self.directory / MODEL_SHAPE)
        except files.DamagedArtifact:
            stored = None  # written from the data again below
        if stored != shape:
            files.write_json(self.directory / MODEL_SHAPE, shape)

    @property
    def name(self) -> str | None:
        """The run's name (``--name``), if it was given one."""
        stored = _read_json(self.directory / NAME)
        name = stored.get("name") if isinstance(stored, dict) else None
        return name if isinstance(name, str) else None

    def record_name(self, name: str) -> None:
        """Name the run (a later name replaces an earlier one; not a hyperparameter)."""
        if self.name != name:
            files.write_json(self.directory / NAME, {"name": name})

    @property
    def init(self) -> Path:
        return self.directory / MAIN / "init.safetensors"

    @property
    def rewind_point(self) -> Path:
        return self.directory / MAIN / "rewind_point.safetensors"

    @property
    def report_directory(self) -> Path:
        return self.directory / "report"

    def instability(self, branch: str, level: int, iteration: int) -> Instability:
        """The files of the instability analysis of ``level`` of ``branch`` from iteration
        ``iteration``."""
        self.level(branch, level)  # checks the branch and level
        return Instability(
            self.directory / "instability" / branch / f"level_{level}" / f"iteration_{iteration}"
        )

    def instability_results(self) -> list[dict]:
        """Every finished linear-path evaluation of the run (the contents of each
        path_<N>.json), in branch, level, iteration and points order."""
        found = []
        pattern = "*/level_*/iteration_*/path_*.json"
        for path in sorted((self.directory / "instability").glob(pattern)):
            result = _read_json(path)
            if result is not None:
                found.append(result)
        return sorted(
            found,
            key=lambda r: (
                BRANCHES.index(r["branch"]) if r.get("branch") in BRANCHES else len(BRANCHES),
                r.get("level", 0),
                r.get("iteration", 0),
                r.get("points", 0),
            ),
        )

    def level(self, branch: str, level: int) -> Level:
        if branch not in BRANCHES or level < 0:
            raise RunError(
                f"no level {level} of branch {branch!r}; expected a level >= 0 of "
                f"{', '.join(BRANCHES)}"
            )
        return Level(self.directory / branch / f"level_{level}")

    def finished_levels(self, branch: str) -> dict[int, dict]:
        """level -> metrics of every finished level of ``branch``, in level order."""
        found = {}
        for directory in sorted((self.directory / branch).glob("level_*")):
            try:
                number = int(directory.name.removeprefix("level_"))
            except ValueError:
                continue
            metrics = Level(directory).read_metrics()
            if metrics is not None:
                found[number] = metrics
        return dict(sorted(found.items()))
