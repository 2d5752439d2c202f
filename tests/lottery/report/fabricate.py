"""Run directories with made-up metrics, written in the layout of sparse_tickets.lottery.runs,
so the report can be tested without training. Every number is a simple formula of (branch,
level, seed), so expected means and deviations can be worked out by hand."""

from pathlib import Path

from sparse_tickets import files
from sparse_tickets.lottery.hparams import Hparams

DENSITIES = (1.0, 0.8, 0.64, 0.512)
MAIN_LEVELS = (0, 1, 2, 3)
CONTROL_LEVELS = (1, 2, 3)  # controls run at pruned levels only


def early_stop_test_accuracy(branch: str, level: int, seed: int) -> float:
    if branch == "main":
        return 0.90 + 0.01 * level + 0.002 * seed
    return 0.88 - 0.02 * level + 0.003 * seed


def early_stop_iteration(branch: str, level: int, seed: int) -> int:
    return 100 * (level + 1) + 50 * seed + (0 if branch == "main" else 400)


def final_test_accuracy(branch: str, level: int, seed: int) -> float:
    return early_stop_test_accuracy(branch, level, seed) - 0.005


def wall_time_seconds(branch: str, level: int, seed: int) -> float:
    return 10.0 + level + 0.5 * seed


def metrics(branch: str, level: int, seed: int) -> dict:
    """The metrics.json of one level, with every field a finished level has."""
    density = DENSITIES[level]
    accuracy = early_stop_test_accuracy(branch, level, seed)
    evaluations = [
        {
            "iteration": 0,
            "train_loss": None,
            "val_loss": 2.3,
            "val_accuracy": 0.1,
            "test_loss": 2.3,
            "test_accuracy": 0.1,
        },
        {
            "iteration": early_stop_iteration(branch, level, seed),
            "train_loss": 0.3,
            "val_loss": 0.2,
            "val_accuracy": accuracy,
            "test_loss": 0.2,
            "test_accuracy": accuracy,
        },
    ]
    return {
        "branch": branch,
        "level": level,
        "density": density,
        "percent_remaining": 100 * density,
        "early_stop_iteration": early_stop_iteration(branch, level, seed),
        "early_stop_val_loss": 0.2,
        "early_stop_val_accuracy": accuracy,
        "early_stop_test_accuracy": accuracy,
        "final_val_accuracy": final_test_accuracy(branch, level, seed),
        "final_test_accuracy": final_test_accuracy(branch, level, seed),
        "wall_time_seconds": wall_time_seconds(branch, level, seed),
        "start_iteration": 0,
        "iterations": 2000,
        "layers": [
            {
                "name": "fc.weight",
                "shape": [10, 10],
                "kept": round(100 * density),
                "total": 100,
                "density": density,
            }
        ],
        "seeds": {"model": seed, "data": seed, "control": 1},
        "evaluations": evaluations,
    }


def make_run(
    root: Path, seed: int = 0, main_levels=MAIN_LEVELS, control_levels=CONTROL_LEVELS, **changes
) -> Path:
    """A run directory under ``root`` for ``Hparams(**changes)`` with model and data seed
    ``seed``, its main branch finished at ``main_levels`` and reinit at ``control_levels``."""
    hp = Hparams(**changes).replace(model_seed=seed, data_seed=seed)
    directory = Path(root) / hp.run_name()
    directory.mkdir(parents=True)
    files.write_json(directory / "hparams.json", hp.as_dict())
    for branch, levels in (("main", main_levels), ("reinit", control_levels)):
        for level in levels:
            level_directory = directory / branch / f"level_{level}"
            level_directory.mkdir(parents=True)
            files.write_json(level_directory / "metrics.json", metrics(branch, level, seed))
    return directory


def instability_result(level: int, iteration: int, seed: int, points: int = 3) -> dict:
    """A path_<N>.json: the test error rises by 0.1 + 0.01 * seed in the middle of the path
    (ends at 0.1 and 0.12), the train error by half that."""
    middle = [0.1 + 0.01 * seed + 0.11] * (points - 2)
    test_error = [0.1, *middle, 0.12]
    train_error = [0.0, *[0.05 + 0.005 * seed + 0.01] * (points - 2), 0.02]
    return {
        "branch": "main",
        "level": level,
        "iteration": iteration,
        "points": points,
        "density": DENSITIES[level],
        "percent_remaining": 100 * DENSITIES[level],
        "alphas": [index / (points - 1) for index in range(points)],
        "test_error": test_error,
        "train_error": train_error,
        "test_loss": [1.0] * points,
        "train_loss": [1.0] * points,
        "test_barrier": max(test_error) - (test_error[0] + test_error[-1]) / 2,
        "train_barrier": max(train_error) - (train_error[0] + train_error[-1]) / 2,
        "data_seeds": [11, 12],
    }


def add_instability(
    directory: Path, level: int, iteration: int, seed: int, points: int = 3
) -> None:
    """An instability analysis of ``level`` from ``iteration`` in a fabricated run."""
    where = Path(directory) / "instability" / "main" / f"level_{level}" / f"iteration_{iteration}"
    where.mkdir(parents=True)
    files.write_json(
        where / f"path_{points}.json", instability_result(level, iteration, seed, points)
    )
