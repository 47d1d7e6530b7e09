"""Per-step training metrics: loss parts, SER accuracy (stage 2), tokens or units per second, data wait."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from freezeempath.batch import ChatOutput, SpeechChatBatch
from freezeempath.chat_template import IGNORE_INDEX
from freezeempath.stages import Stage
from freezeempath.train.losses import LossParts


class StepMeter:
    """Accumulates micro-steps into one optimizer step's metrics."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self._reset()
        self.step_start = time.perf_counter()
        self.epoch_losses: list[float] = []

    def _reset(self) -> None:
        self.parts: dict[str, float] = {}
        self.micro = 0
        self.items = 0  # labelled text tokens or target units
        self.correct = self.labelled = 0
        self.wait = 0.0

    def data_wait(self, seconds: float) -> None:
        """Time spent waiting for the next batch."""
        self.wait += seconds

    def micro_step(self, loss: LossParts, out: ChatOutput, batch: SpeechChatBatch) -> None:
        """Add one micro-batch."""
        self.micro += 1
        for key, value in {"loss": float(loss.total.detach()), **loss.parts}.items():
            self.parts[key] = self.parts.get(key, 0.0) + value
        if self.stage.speech_stage and batch.unit_lens is not None:
            self.items += int(batch.unit_lens.sum())
        else:
            self.items += int((out.text_labels != IGNORE_INDEX).sum())
        known = out.emotion_labels != IGNORE_INDEX
        if self.stage in (Stage.S2A, Stage.S2B) and known.any():
            pred = out.aux_logits.detach().argmax(-1)
            self.correct += int((pred[known] == out.emotion_labels[known]).sum())
            self.labelled += int(known.sum())

    def finish_step(self, progress: Any, lr: float) -> dict[str, float]:
        """Metrics of the optimizer step that just ended."""
        now = time.perf_counter()
        elapsed = max(now - self.step_start, 1e-9)
        metrics = {k: v / max(self.micro, 1) for k, v in self.parts.items()}
        rate_key = "units_per_s" if self.stage.speech_stage else "tokens_per_s"
        metrics.update(
            {
                "step": progress.step,
                "epoch": progress.epoch,
                "lr": lr,
                rate_key: self.items / elapsed,
                "data_wait_fraction": min(1.0, self.wait / elapsed),
                "step_seconds": elapsed,
            }
        )
        if self.labelled:
            metrics["ser_accuracy"] = self.correct / self.labelled
        self.epoch_losses.append(metrics.get("loss", 0.0))
        self._reset()
        self.step_start = now
        return metrics

    def epoch_metrics(self, progress: Any) -> dict[str, float]:
        """Summary reported with the end-of-epoch checkpoint."""
        mean = sum(self.epoch_losses) / max(len(self.epoch_losses), 1)
        self.epoch_losses = []
        return {"step": progress.step, "epoch": progress.epoch, "epoch_loss": mean}


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """Write metric rows to a CSV (columns = union of keys, in first-seen order)."""
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_losses(rows: list[dict[str, float]], path: Path) -> Path:
    """Loss curve PNG (total and parts per step)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    steps = [r for r in rows if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "text", "aux", "unit"):
        points = [(r["step"], r[key]) for r in steps if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
