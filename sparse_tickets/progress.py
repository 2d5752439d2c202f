"""What a run shows while it works: tqdm bars (level, iteration, loss, ETA), or log lines."""

from __future__ import annotations

import sys

from tqdm import tqdm


class LogLines:
    """Log lines only: one per finished level and per message (``--quiet``)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self._label = ""

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start_level(self, label: str, first: int, last: int, done: int) -> None:
        self._label = label

    def update(self, iteration: int, evaluation: dict | None) -> None:
        pass

    def close(self) -> None:
        """End whatever is on screen, so the next line starts on a line of its own."""

    def end_level(self, metrics: dict) -> None:
        self.message(
            f"{self._label}: early stop at iteration {metrics['early_stop_iteration']}, "
            f"test accuracy {metrics['early_stop_test_accuracy']:.4f} (final "
            f"{metrics['final_test_accuracy']:.4f}), "
            f"{metrics['wall_time_seconds']:.1f} s"
        )


class ProgressBars(LogLines):
    """A tqdm bar per level: iterations with ETA, and the latest losses and accuracy."""

    _bar = None

    def start_level(self, label: str, first: int, last: int, done: int) -> None:
        super().start_level(label, first, last, done)
        self.close()
        self._first = first
        self._bar = tqdm(
            total=last - first,
            initial=done - first,
            desc=label,
            unit="it",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
        )

    def update(self, iteration: int, evaluation: dict | None) -> None:
        if evaluation is not None:
            postfix = {
                "val_loss": f"{evaluation['val_loss']:.3f}",
                "val_acc": f"{evaluation['val_accuracy']:.3f}",
            }
            if evaluation["train_loss"] is not None:
                postfix = {"loss": f"{evaluation['train_loss']:.3f}", **postfix}
            self._bar.set_postfix(postfix, refresh=False)
        # tqdm rate-limits its redraws, so a call per iteration costs little.
        self._bar.update(iteration - self._first - self._bar.n)

    def end_level(self, metrics: dict) -> None:
        self.close()
        super().end_level(metrics)

    def close(self) -> None:
        # tqdm ends a closed bar's line (leave=True), also when the level was cut short.
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def message(self, text: str) -> None:
        tqdm.write(text, file=self.stream)
