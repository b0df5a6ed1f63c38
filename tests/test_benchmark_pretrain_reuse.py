"""The scenes transfer benchmarks reuse a backbone's pretraining only when the same command and the same config
file contents made it (benchmarks/transfer_common.py): an edited recipe must train again, not reuse a stale run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

# benchmarks/ is not a package: load the module from its file without touching sys.path
_spec = importlib.util.spec_from_file_location(
    "transfer_common", Path(__file__).resolve().parent.parent / "benchmarks" / "transfer_common.py")
transfer_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transfer_common)


@pytest.fixture()
def fake_training(monkeypatch):
    """Stand-in for the classification trainer: writes best.pth and counts the runs."""
    runs, stop = [], []

    def train(cfg):
        out = Path(cfg["out_dir"])
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints" / "best.pth").write_bytes(b"weights")
        runs.append(cfg)
        return SimpleNamespace(val_top1=90.0 + len(runs), epochs=cfg["epochs"], wall_s=1.0,
                               stopped=stop.pop() if stop else "")

    def load_config(path, args):
        epochs = int(Path(path).read_text().split("epochs:")[1].split()[0])
        return {"out_dir": next(a.split("=", 1)[1] for a in args if a.startswith("engine.out_dir=")),
                "epochs": epochs, "args": args}

    monkeypatch.setattr("splitattn.engine.trainer.train", train)
    monkeypatch.setattr("splitattn.config.load_config", load_config)
    return SimpleNamespace(runs=runs, stop=stop)


def test_pretraining_reused_only_for_the_same_command_and_config(tmp_path, fake_training):
    config = tmp_path / "recipe.yaml"
    config.write_text("optim:\n  epochs: 16\n")
    first, record = transfer_common.pretrain("resnest", "resnest14", [], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 1 and record["epochs"] == 16 and first.is_file()
    saved = json.loads((tmp_path / "out" / "pretrain_resnest" / "pretrain_summary.json").read_text())
    assert saved == record and "model.name=resnest14" in saved["command"]

    again, reused = transfer_common.pretrain("resnest", "resnest14", [], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 1 and reused == record and again == first  # same command + config: reused

    config.write_text("optim:\n  epochs: 32\n")  # the recipe changed: train again
    _, retrained = transfer_common.pretrain("resnest", "resnest14", [], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 2 and retrained["epochs"] == 32
    assert retrained["config_sha256"] != record["config_sha256"]

    _, other = transfer_common.pretrain("resnest", "resnest14", ["optim.lr_per_256=0.1"], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 3 and "optim.lr_per_256=0.1" in other["command"]  # another command: train again


def test_pretraining_without_a_config_hash_is_not_reused(tmp_path, fake_training):
    """A record from before the hash was kept (or a hand-copied run) cannot vouch for its recipe."""
    config = tmp_path / "recipe.yaml"
    config.write_text("optim:\n  epochs: 16\n")
    out_dir = tmp_path / "out" / "pretrain_resnest"
    (out_dir / "checkpoints").mkdir(parents=True)
    (out_dir / "checkpoints" / "best.pth").write_bytes(b"old")
    command = f"splitattn train --config {config} model.name=resnest14 engine.out_dir={out_dir}"
    (out_dir / "pretrain_summary.json").write_text(json.dumps({"command": command, "epochs": 16}))
    _, record = transfer_common.pretrain("resnest", "resnest14", [], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 1 and (out_dir / "checkpoints" / "best.pth").read_bytes() == b"weights"
    assert json.loads((out_dir / "pretrain_summary.json").read_text()) == record and "config_sha256" in record


def test_pretraining_needs_its_checkpoint_and_a_finished_run(tmp_path, fake_training):
    config = tmp_path / "recipe.yaml"
    config.write_text("optim:\n  epochs: 16\n")
    checkpoint, _ = transfer_common.pretrain("resnest", "resnest14", [], tmp_path / "out", str(config))
    checkpoint.unlink()  # the record alone cannot stand in for the weights
    transfer_common.pretrain("resnest", "resnest14", [], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 2 and checkpoint.is_file()

    # a run stopped by SIGINT / SIGTERM returns normally from train(): it must not leave a record to reuse
    summary_path = tmp_path / "out" / "pretrain_r2" / "pretrain_summary.json"
    fake_training.stop.append("SIGTERM: saved at global step 10; resume with engine.resume=auto")
    with pytest.raises(SystemExit, match="stopped"):
        transfer_common.pretrain("r2", "resnest14", [], tmp_path / "out", str(config))
    assert not summary_path.exists()
    transfer_common.pretrain("r2", "resnest14", [], tmp_path / "out", str(config))
    assert len(fake_training.runs) == 4 and summary_path.is_file()
