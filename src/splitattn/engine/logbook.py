"""A run's records on disk: JSONL per logged step and per evaluation, a CSV of the evaluations, TensorBoard.

Only the main process writes. Resumed runs append; readers keep the last record of each step, so a
stretch replayed after a crash is not counted twice.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path, key: str = "step") -> list[dict[str, Any]]:
    """Records of a JSONL log, one per ``key`` value (the last one written wins), sorted by it."""
    if not path.is_file():
        return []
    latest: dict[Any, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest[record[key]] = record
    return [latest[k] for k in sorted(latest)]


class Logbook:
    def __init__(self, out_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.out_dir = out_dir
        self.enabled = enabled
        self.steps_path = out_dir / "steps.jsonl"
        self.evals_path = out_dir / "evals.jsonl"
        self.csv_path = out_dir / "metrics.csv"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (pip install splitattn[train])
                pass
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def reset(self) -> None:
        """Forget the logs of an earlier run in the same folder (a fresh, not resumed, run)."""
        if self.enabled:
            for path in (self.steps_path, self.evals_path, self.csv_path):
                path.unlink(missing_ok=True)

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def step(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append(self.steps_path, record)
        if self.writer:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def evaluation(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append(self.evals_path, record)
        rows = read_jsonl(self.evals_path)
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with open(self.csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if self.writer:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"val/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer:
            self.writer.close()
