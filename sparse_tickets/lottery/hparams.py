"""The hyperparameters of a lottery-ticket run: one frozen dataclass whose fields are also the
command line's flags (each field's ``help`` metadata is the flag's help).

Every field shapes the results, so every field goes into the run's hash; where data lives, where
runs go, how often to checkpoint and how much to print are options of the command, not
hyperparameters. Lengths of training (``iterations``, ``milestones``, ``warmup``,
``rewind_iteration``) are counted in iterations (``"2000"``, ``"2000it"``) or epochs
(``"160ep"``), resolved once the dataset's size is known.

Equal settings name one run directory: every length and list is kept in one spelling
(``" 10 ep"``, ``"0010ep"`` -> ``"10ep"``; ``"2000it"`` -> ``"2000"``; levels sorted), so the
hash sees values, not how they were typed. A spelling that was already the one spelling keeps
its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from ..pruning import AT_INIT_METHODS, CRITERIA, STRATEGIES, get_criterion, parse_nm


class HparamsError(ValueError):
    """A hyperparameter value that cannot be used, with what was expected."""


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


def _listed(names, last: str = "or") -> str:
    """``a, b or c``: names as a sentence lists them."""
    names = list(names)
    return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else "".join(names)


def _strategy_help() -> str:
    # From the registered criteria, so a criterion the library adds is offered here at once.
    return (
        f"which weights to prune: {_listed(STRATEGIES)} (each level, from the trained "
        f"weights); or {_listed(AT_INIT_METHODS)} (pruning at initialisation: with "
        f"--one-shot-density, from the weights the pruned level starts from)"
    )


def _score_batches_help() -> str:
    scorers = [name for name, criterion in CRITERIA.items() if criterion.needs_batches]
    return f"training batches of --batch-size examples that {_listed(scorers, 'and')} score with"


@dataclass(frozen=True)
class Hparams:
    # What is trained.
    model: str = field(
        default="lenet_300_100", metadata=_help("model name (see `sparse-tickets list`)")
    )
    dataset: str = field(
        default="mnist5k", metadata=_help("dataset name (see `sparse-tickets list`)")
    )
    train_size: int = field(
        default=0,
        metadata=_help(
            "use only this many training examples, a fixed subset (0: all); for synthetic, the "
            "number generated (5000 by default), with validation and test sets a fifth of it "
            "(100 to 1000 each)"
        ),
    )
    dropout: float = field(
        default=0.0, metadata=_help("dropout rate after the hidden fc layers (conv2/4/6 only)")
    )
    masks_sha256: str = field(
        default="",
        metadata=_help(
            "digest of the masks file level 0 trains with (set by `train --masks`)", flag=False
        ),
    )

    # How it is trained.
    optimizer: str = field(default="adam", metadata=_help("adam or sgd"))
    lr: float = field(default=1.2e-3, metadata=_help("learning rate"))
    momentum: float = field(default=0.0, metadata=_help("SGD momentum"))
    weight_decay: float = field(default=0.0, metadata=_help("L2 weight decay"))
    batch_size: int = field(default=60, metadata=_help("examples per iteration"))
    iterations: str = field(
        default="1000",
        metadata=_help("training length per level, in iterations (1000) or epochs (160ep)"),
    )
    milestones: str = field(
        default="",
        metadata=_help(
            "comma-separated iterations or epochs at which the learning rate is multiplied by "
            "--gamma (e.g. 80ep,120ep)"
        ),
    )
    gamma: float = field(default=0.1, metadata=_help("learning-rate factor at each milestone"))
    warmup: str = field(
        default="0",
        metadata=_help("linear learning-rate warmup from 0 over this many iterations or epochs"),
    )
    eval_every: int = field(
        default=50, metadata=_help("evaluate validation and test sets every this many iterations")
    )

    # How it is pruned.
    levels: int = field(default=10, metadata=_help("pruning levels after the dense level 0"))
    scope: str = field(
        default="layerwise",
        metadata=_help(
            "layerwise (each layer at its own rate) or global (one threshold across layers)"
        ),
    )
    strategy: str = field(default="magnitude", metadata=_help(_strategy_help()))
    conv_fraction: float = field(
        default=0.0,
        metadata=_help(
            "fraction of each conv layer's remaining weights pruned per level (0: not pruned)"
        ),
    )
    fc_fraction: float = field(
        default=0.2,
        metadata=_help(
            "fraction of each hidden fc layer's remaining weights pruned per level (0: not pruned)"
        ),
    )
    output_fraction: float = field(
        default=0.1,
        metadata=_help(
            "fraction of the output layer's remaining weights pruned per level (0: not pruned)"
        ),
    )
    one_shot_density: float | None = field(
        default=None,
        metadata=_help(
            "prune once, straight to this density (e.g. 0.2), instead of iteratively; every "
            "layer with a nonzero rate goes to this density"
        ),
    )
    nm: str = field(
        default="",
        metadata=_help(
            "N:M structure, e.g. 2:4: at most N kept of every M consecutive weights along each "
            "layer's input dimension, tightening level by level as density falls (see "
            "sparse_tickets.pruning.nm); empty for unstructured"
        ),
    )
    score_batches: int = field(default=1, metadata=_help(_score_batches_help()))
    synflow_iterations: int = field(
        default=100, metadata=_help("iterations of synflow's exponential pruning schedule")
    )
    rewind: str = field(
        default="init",
        metadata=_help(
            "init: rewind survivors to iteration 0; iteration: to --rewind-iteration; lr: keep the "
            "trained weights and replay the learning-rate schedule from --rewind-iteration"
        ),
    )
    rewind_iteration: str = field(
        default="0",
        metadata=_help(
            "the rewind point K in iterations or epochs (with --rewind iteration or lr)"
        ),
    )

    # Controls.
    controls: str = field(
        default="reinit",
        metadata=_help(
            "comma-separated control branches: reinit (same masks, fresh init), random_pruning "
            "(same per-layer densities, random positions); 'none' for no controls"
        ),
    )
    control_levels: str = field(
        default="",
        metadata=_help(
            "comma-separated levels at which to run the controls (default: every pruned level)"
        ),
    )

    # Instability analysis, a branch at chosen levels of the main run.
    instability_levels: str = field(
        default="",
        metadata=_help(
            "comma-separated main levels at which to run the instability analysis (two copies "
            "trained from --instability-iterations with different data orders, evaluated along "
            "the linear path between them); empty for none"
        ),
    )
    instability_iterations: str = field(
        default="0",
        metadata=_help(
            "comma-separated iterations or epochs K from which the copies are spawned (each at "
            "least the level's own start iteration)"
        ),
    )
    instability_points: int = field(
        default=11,
        metadata=_help(
            "points evaluated along the linear path between the two copies, ends included"
        ),
    )

    # Seeds, kept separate so one can vary while the others stay fixed.
    model_seed: int = field(default=0, metadata=_help("seed of the model's initialisation"))
    data_seed: int = field(default=0, metadata=_help("seed of the training data order"))
    control_seed: int = field(
        default=1, metadata=_help("seed of the controls' fresh initialisation and random masks")
    )

    def __post_init__(self):
        # Stored in one spelling so that equal settings hash equal; a value that does not
        # parse is kept as given, for validate() to name.
        for name, canonical in _CANONICAL_FORMS.items():
            try:
                object.__setattr__(self, name, canonical(getattr(self, name)))
            except (ValueError, TypeError):
                pass

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A hash of every field that shapes the main branch: equal hash, equal main branch.

        The branch fields (:data:`BRANCH_FIELDS`: which controls and instability analyses
        to run) are not in it: they add branches beside the main one and change nothing in
        it, so adding a control to a finished run reuses its ticket levels. The fields added
        after the first release count only when they differ from their defaults, so a run of
        an earlier version keeps its name and is resumed by this one."""
        return self._hash(excluded=BRANCH_FIELDS)

    def legacy_digest(self) -> str:
        """The hash run directories were named by before the branch fields left it (every
        field in it): such a directory is found and resumed under this name."""
        return self._hash(excluded=())

    def _hash(self, excluded: tuple) -> str:
        defaults = Hparams().as_dict()
        values = {
            name: value
            for name, value in self.as_dict().items()
            if name not in excluded and (name not in ADDED_FIELDS or value != defaults[name])
        }
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def main_branch(self) -> dict:
        """The fields that shape the main branch (all but :data:`BRANCH_FIELDS`)."""
        return {name: value for name, value in self.as_dict().items() if name not in BRANCH_FIELDS}

    def run_name(self) -> str:
        """The run directory's name: a readable prefix plus the hash."""
        return f"{self.model}-{self.dataset}-{self.digest()}"

    def legacy_run_name(self) -> str:
        return f"{self.model}-{self.dataset}-{self.legacy_digest()}"

    @classmethod
    def from_dict(cls, values: dict) -> Hparams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HparamsError(
                f"unknown hyperparameters {', '.join(unknown)}; expected {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes) -> Hparams:
        return dataclasses.replace(self, **changes)

    def control_names(self) -> list[str]:
        names = [n.strip() for n in self.controls.split(",") if n.strip()]
        return [] if names == ["none"] else names

    def instability_level_numbers(self) -> list[int]:
        return [int(v) for v in self.instability_levels.split(",") if v.strip()]

    def control_level_numbers(self) -> list[int]:
        """Levels at which the controls run (pruned levels only: level 0 has nothing to
        control)."""
        last = 1 if self.one_shot_density is not None else self.levels
        if not self.control_levels.strip():
            return list(range(1, last + 1))
        return [int(v) for v in self.control_levels.split(",") if v.strip()]


# Fields added after the first release (see Hparams.digest).
# Which branches run beside the main one: not in the run's hash (see Hparams.digest).
BRANCH_FIELDS = (
    "controls",
    "control_levels",
    "instability_levels",
    "instability_iterations",
    "instability_points",
)
ADDED_FIELDS = (
    "nm",
    "score_batches",
    "synflow_iterations",
    "instability_levels",
    "instability_iterations",
    "instability_points",
)
CONTROLS = ("reinit", "random_pruning")
REWINDS = ("init", "iteration", "lr")
OPTIMIZERS = ("adam", "sgd")
SEED_FIELDS = ("model_seed", "data_seed", "control_seed")
# torch seeds its generators with an unsigned 64-bit integer.
MAX_SEED = 2**64 - 1
# Bounds far past any real experiment (the presets' longest run is VGG-19's 160 epochs, 112,480
# iterations; their deepest, 20 levels) that keep every count a machine int and every list
# per level small: a typo of extra digits is refused up front, not deep inside a run.
MAX_ITERATIONS = 10**9
MAX_LEVELS = 1000
MAX_POINTS = 1000
# ASCII only, like the N:M pattern: int() would take other scripts' digits too.
_STEPS = re.compile(r"^\s*(\d+)\s*(it|ep)?\s*$", re.ASCII)


def _count_and_unit(text: str, name: str) -> tuple[int, str]:
    match = _STEPS.match(str(text))
    if not match:
        raise HparamsError(
            f"{name} is {text!r}; expected a count of iterations (2000) or epochs (160ep)"
        )
    return int(match.group(1)), match.group(2) or "it"


def parse_steps(text: str, iterations_per_epoch: int, name: str) -> int:
    """``"2000"``/``"2000it"`` -> 2000; ``"160ep"`` -> 160 epochs in iterations; at most
    :data:`MAX_ITERATIONS`."""
    count, unit = _count_and_unit(text, name)
    steps = count * iterations_per_epoch if unit == "ep" else count
    if steps > MAX_ITERATIONS:
        resolved = f" ({steps} iterations)" if unit == "ep" and iterations_per_epoch > 1 else ""
        raise HparamsError(
            f"{name} is {text!r}{resolved}; expected at most {MAX_ITERATIONS:,} iterations"
        )
    return steps


def parse_step_list(text: str, iterations_per_epoch: int, name: str) -> list[int]:
    return sorted(parse_steps_in_order(text, iterations_per_epoch, name))


def parse_steps_in_order(text: str, iterations_per_epoch: int, name: str) -> list[int]:
    """The comma-separated lengths of ``text`` in iterations, in the order written."""
    return [parse_steps(part, iterations_per_epoch, name) for part in _items(text)]


def _items(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


# --- the one spelling of each value (see Hparams.__post_init__) ------------------------------


def canonical_steps(text: str) -> str:
    """``" 10 ep"``, ``"0010ep"`` -> ``"10ep"``; ``"2000it"`` -> ``"2000"``; a zero length in
    any unit -> ``"0"``. Raises HparamsError for text that is no length."""
    count, unit = _count_and_unit(text, "length")
    return f"{count}ep" if unit == "ep" and count else str(count)


def _canonical_step_sequence(text: str) -> str:
    # Milestones keep their order: an order that is not increasing is refused (see
    # validate_lengths), not silently sorted.
    return ",".join(canonical_steps(part) for part in _items(text))


def _canonical_step_set(text: str) -> str:
    # Spawn iterations are a set of analyses. Iterations and epochs cannot be ordered against
    # each other before the data's size is known: iterations first, then epochs.
    parts = {canonical_steps(part) for part in _items(text)}
    return ",".join(sorted(parts, key=lambda p: (p.endswith("ep"), int(p.rstrip("ep")))))


def _canonical_level_set(text: str) -> str:
    return ",".join(str(level) for level in sorted({int(part) for part in _items(text)}))


def _canonical_controls(text: str) -> str:
    names = set(_items(text))
    if not names <= {*CONTROLS, "none"} or (len(names) > 1 and "none" in names):
        raise HparamsError(f"controls is {text!r}")  # left as given, for validate to name
    return ",".join(name for name in (*CONTROLS, "none") if name in names)


def _canonical_nm(text: str) -> str:
    return str(parse_nm(text)) if str(text).strip() else ""


_CANONICAL_FORMS = {
    "iterations": canonical_steps,
    "warmup": canonical_steps,
    "rewind_iteration": canonical_steps,
    "milestones": _canonical_step_sequence,
    "instability_iterations": _canonical_step_set,
    "controls": _canonical_controls,
    "control_levels": _canonical_level_set,
    "instability_levels": _canonical_level_set,
    "nm": _canonical_nm,
}


def validate(hp: Hparams) -> None:
    """Raise HparamsError (one line) for the first value that cannot be used."""

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise HparamsError(message)

    require(
        hp.optimizer in OPTIMIZERS,
        f"optimizer is {hp.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}",
    )
    # inf and nan pass most range checks (inf > 0) and would fail only once training starts.
    for field_ in dataclasses.fields(hp):
        value = getattr(hp, field_.name)
        if isinstance(value, float):
            require(math.isfinite(value), f"{field_.name} is {value}; expected a finite number")
    for name in SEED_FIELDS:
        seed = getattr(hp, name)
        require(
            0 <= seed <= MAX_SEED,
            f"{name} is {seed}; expected an integer from 0 to 2**64 - 1 ({MAX_SEED})",
        )
    require(hp.lr > 0, f"lr is {hp.lr}; expected a positive learning rate")
    # Momentum 1 or more never forgets a gradient: the velocity grows without bound.
    require(0 <= hp.momentum < 1, f"momentum is {hp.momentum}; expected a momentum in [0, 1)")
    require(hp.weight_decay >= 0, f"weight_decay is {hp.weight_decay}; expected >= 0")
    require(hp.batch_size >= 1, f"batch_size is {hp.batch_size}; expected >= 1")
    require(hp.gamma > 0, f"gamma is {hp.gamma}; expected > 0")
    require(
        1 <= hp.eval_every <= MAX_ITERATIONS,
        f"eval_every is {hp.eval_every}; expected 1 to {MAX_ITERATIONS:,} iterations",
    )
    require(hp.train_size >= 0, f"train_size is {hp.train_size}; expected >= 0")
    require(0 <= hp.dropout < 1, f"dropout is {hp.dropout}; expected a rate in [0, 1)")
    require(0 <= hp.levels <= MAX_LEVELS, f"levels is {hp.levels}; expected 0 to {MAX_LEVELS}")
    criterion = get_criterion(hp.strategy)
    require(
        criterion is not None, f"strategy is {hp.strategy!r}; expected one of {', '.join(CRITERIA)}"
    )
    require(
        hp.scope in ("layerwise", "global"), f"scope is {hp.scope!r}; expected layerwise or global"
    )
    for name in ("conv_fraction", "fc_fraction", "output_fraction"):
        value = getattr(hp, name)
        require(0 <= value < 1, f"{name} is {value}; expected a fraction in [0, 1)")
    if hp.one_shot_density is not None:
        require(
            0 < hp.one_shot_density <= 1,
            f"one_shot_density is {hp.one_shot_density}; expected a density in (0, 1]",
        )
    require(hp.rewind in REWINDS, f"rewind is {hp.rewind!r}; expected one of {', '.join(REWINDS)}")
    for name in ("iterations", "warmup", "rewind_iteration"):
        parse_steps(getattr(hp, name), 1, name)
    require(
        parse_steps(hp.iterations, 1, "iterations") >= 1,
        f"iterations is {hp.iterations!r}; expected at least 1 iteration (or epoch) of training",
    )
    parse_step_list(hp.milestones, 1, "milestones")
    controls = _items(hp.controls)
    require(
        controls,
        f"controls is {hp.controls!r}; expected {', '.join(CONTROLS)} (comma-separated) or none",
    )
    require(
        "none" not in controls or len(controls) == 1,
        f"controls is {hp.controls!r}; expected none alone, or controls without none",
    )
    unknown = [c for c in hp.control_names() if c not in CONTROLS]
    require(
        not unknown, f"unknown control {', '.join(unknown)}; expected {', '.join(CONTROLS)} or none"
    )
    try:
        levels = hp.control_level_numbers()
    except ValueError:
        raise HparamsError(
            f"control_levels is {hp.control_levels!r}; expected comma-separated level numbers"
        ) from None
    last = 1 if hp.one_shot_density is not None else hp.levels
    bad = [level for level in levels if not 1 <= level <= last]
    require(not bad, f"control_levels names {bad}; expected pruned levels 1..{last}")
    if criterion.at_initialisation:
        require(
            hp.one_shot_density is not None,
            f"strategy {hp.strategy} prunes at initialisation, once; expected "
            f"one_shot_density (e.g. 0.1) too",
        )
        require(
            hp.rewind != "lr",
            f"strategy {hp.strategy} scores the weights a level starts "
            f"from; expected rewind init or iteration, not lr",
        )
    require(
        1 <= hp.score_batches <= MAX_ITERATIONS,
        f"score_batches is {hp.score_batches}; expected 1 to {MAX_ITERATIONS:,}",
    )
    require(
        1 <= hp.synflow_iterations <= MAX_ITERATIONS,
        f"synflow_iterations is {hp.synflow_iterations}; expected 1 to {MAX_ITERATIONS:,}",
    )
    if hp.nm:
        try:
            parse_nm(hp.nm)
        except ValueError as error:
            raise HparamsError(f"nm: {error}") from None
    try:
        unstable = hp.instability_level_numbers()
    except ValueError:
        raise HparamsError(
            f"instability_levels is {hp.instability_levels!r}; expected "
            f"comma-separated level numbers"
        ) from None
    bad = [level for level in unstable if not 0 <= level <= last]
    require(not bad, f"instability_levels names {bad}; expected levels 0..{last}")
    parse_step_list(hp.instability_iterations, 1, "instability_iterations")
    require(
        not unstable or parse_step_list(hp.instability_iterations, 1, "instability_iterations"),
        "instability_iterations is empty; expected at least one iteration K",
    )
    require(
        2 <= hp.instability_points <= MAX_POINTS,
        f"instability_points is {hp.instability_points}; expected 2 (the two ends) to {MAX_POINTS}",
    )


def validate_lengths(hp: Hparams, iterations_per_epoch: int) -> None:
    """Raise HparamsError (one line) for a length that does not fit the run once lengths are in
    iterations (``iterations_per_epoch`` known from the training set): a warmup longer than
    training, milestones outside it or out of order, more scoring batches than an epoch."""

    def steps(name: str) -> int:
        return parse_steps(getattr(hp, name), iterations_per_epoch, name)

    def in_iterations(name: str) -> str:
        value = getattr(hp, name)
        return repr(value) if value == str(steps(name)) else f"{value!r} ({steps(name)} iterations)"

    total = steps("iterations")
    if steps("warmup") > total:
        raise HparamsError(
            f"warmup is {in_iterations('warmup')}; expected at most the "
            f"{total} iterations of training"
        )
    milestones = parse_steps_in_order(hp.milestones, iterations_per_epoch, "milestones")
    written = repr(hp.milestones)
    if hp.milestones != ",".join(map(str, milestones)):
        written += f" ({', '.join(map(str, milestones))} iterations)"
    outside = [m for m in milestones if not 0 < m < total]
    if outside:
        raise HparamsError(
            f"milestones {written} has {', '.join(map(str, outside))}; expected "
            f"milestones after iteration 0 and before the end of training at "
            f"{total}"
        )
    if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
        raise HparamsError(
            f"milestones {written} are not increasing; expected each after the one before"
        )
    criterion = get_criterion(hp.strategy)
    if (
        criterion is not None
        and criterion.needs_batches
        and (hp.score_batches > iterations_per_epoch)
    ):
        raise HparamsError(
            f"score_batches is {hp.score_batches}; expected at most the "
            f"{iterations_per_epoch} batches of one epoch"
        )
