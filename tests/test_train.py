"""End to end through the CLI a user runs: training on real Fashion-MNIST, eval, predict, resume after
SIGTERM and SIGKILL, divergence, bad input, a folder that holds a run, and torchrun with two gloo processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import foolbox_photos
from tests.test_data import _require_fashion_mnist

CONFIG = "configs/fashion_mnist/resnest_cpu.yaml"
# a tiny ResNeSt and a 1024-image subset: ~16 steps per epoch, seconds per run
# engine.device=cpu: these runs test the engine (resume, gloo DDP) and compare losses across runs exactly
TINY = ["engine.device=cpu", "engine.compile=false", "optim.weight_decay=0.0001",
        "model.overrides.avd_first=false", "model.overrides.base_planes=8", "model.overrides.stem_width=8",
        "data.train_subset=1024",
        "data.val_subset=256", "optim.batch_size=64", "optim.epochs=6", "optim.warmup_epochs=1",
        "optim.mixup=0", "optim.drop_block=0", "engine.amp=none", "engine.deterministic=true",
        "engine.log_every_steps=1", "engine.progress=false", "engine.tensorboard=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def splitattn(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "splitattn", *args], capture_output=True, text=True,
                            env=ENV, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"splitattn {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def losses(out_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out_dir / "steps.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}  # a replayed step after a resume overwrites itself


def wait_for_steps(out_dir: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out_dir / "steps.jsonl").is_file() and len(losses(out_dir)) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before step {count}: {process.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no step {count} within {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    _require_fashion_mnist()
    out = tmp_path_factory.mktemp("uninterrupted")
    splitattn("train", "--config", CONFIG, *TINY, f"engine.out_dir={out}")
    return out


def test_training_on_real_fashion_mnist_through_the_cli(tmp_path):
    _require_fashion_mnist()
    out = tmp_path / "run"
    result = splitattn("train", "--config", CONFIG, "data.train_subset=8000", "optim.epochs=2", "optim.batch_size=128",
                       "optim.warmup_epochs=0.5", "engine.compile=false", "engine.eval_every_steps=0",
                       "engine.progress=false", f"engine.out_dir={out}")
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"resnest14: top-1 ([\d.]+)% on 10000 images after 2 epoch\(s\), 124 steps, "
                         r"wall time \d+m\d\ds", last)
    assert match, last
    top1 = float(match.group(1))
    assert top1 >= 78.0, f"2 epochs on 8000 real images should beat 78% (chance is 10%), got {top1}"
    for name in ("checkpoints/best.pth", "checkpoints/last.pth", "curves.png", "predictions.png",
                 "metrics.csv", "steps.jsonl", "evals.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "predictions.png").stat().st_size > 10_000
    assert list((out / "tensorboard").glob("events.out.tfevents.*")), "tensorboard is installed: it must log"

    evaluated = splitattn("eval", "--checkpoint", str(out / "checkpoints/best.pth")).stdout
    again = float(re.search(r"top-1 ([\d.]+)%", evaluated).group(1))
    # the CPU reproduces the in-training evaluation exactly; cuDNN's algorithm choice may move a test image or two
    assert abs(again - top1) <= (0.0 if not torch.cuda.is_available() else 0.1), (again, top1)
    assert "on 10000 images" in evaluated

    # int8 (PT2E, calibrated on 300 training images) against fp32 on the whole real test set
    record_path = out / "int8.json"
    splitattn("quantize", str(out / "checkpoints/best.pth"), "--output", str(out / "int8.pt2"),
              "--summary-json", str(record_path))
    record = json.loads(record_path.read_text())
    assert record["calibration"] == "300 random Fashion-MNIST train images"
    assert record["images"] == record["labelled"] == 10000  # fp32 here; the run evaluated in bf16 autocast
    # measured: 99.19 % agreement, +0.09 points (the 16-epoch demo model: 99.67 %, +0.03; docs/deploy.md)
    assert record["agree"] >= 9850, record
    assert abs(record["int8_correct"] - record["fp32_correct"]) <= 40, record  # 0.4 points
    refused = splitattn("quantize", str(out / "checkpoints/best.pth"), "--output", str(out / "int8.pt2"), check=False)
    assert refused.returncode == 2 and "int8.pt2 already exists: pass --overwrite" in refused.stderr

    photo = next(p for p in foolbox_photos()[0].parent.glob("fashionMNIST_*_9.png"))  # an ankle boot
    predicted = splitattn("predict", "--checkpoint", str(out / "checkpoints/best.pth"), str(photo)).stdout
    rows = predicted.strip().splitlines()[1:]
    assert len(rows) == 5 and "Ankle boot" in predicted


def test_resume_after_sigterm_and_sigkill_replays_the_same_losses(tmp_path, uninterrupted):
    out = tmp_path / "interrupted"
    args = [sys.executable, "-m", "splitattn", "train", "--config", CONFIG, *TINY, f"engine.out_dir={out}",
            "engine.resume=auto", "engine.checkpoint_every_steps=10"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_steps(out, 12, first)
    first.send_signal(signal.SIGTERM)
    stdout, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "stopped early: SIGTERM received" in stdout
    saved = torch.load(out / "checkpoints/last.pth", weights_only=True)
    assert 12 <= saved["step"] < 96

    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_steps(out, saved["step"] + 25, second)
    second.kill()  # SIGKILL: no chance to save; up to 9 steps are lost and must be replayed
    second.wait()
    splitattn("train", "--config", CONFIG, *TINY, f"engine.out_dir={out}", "engine.resume=auto",
              "engine.checkpoint_every_steps=10")
    expected, got = losses(uninterrupted), losses(out)
    assert sorted(got) == sorted(expected) == list(range(1, 97))
    assert all(got[s] == pytest.approx(expected[s], rel=1e-6, abs=1e-7) for s in expected)


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    _require_fashion_mnist()
    out = tmp_path / "nan"
    result = splitattn("train", "--config", CONFIG, *TINY, "optim.lr=1e6", "optim.warmup_epochs=0",
                       "engine.checkpoint_every_steps=1", f"engine.out_dir={out}", check=False)
    assert result.returncode == 2
    match = re.search(r"loss became (nan|inf) at step (\d+), epoch [\d.]+: stopped before that update", result.stderr)
    assert match, result.stderr[-2000:]
    saved = torch.load(out / "checkpoints/last.pth", weights_only=True)
    assert saved["step"] == int(match.group(2)) - 1


def test_resume_from_another_model_is_refused(tmp_path, uninterrupted):
    result = splitattn("train", "--config", CONFIG, *TINY, "model.name=resnest26",
                       f"engine.resume={uninterrupted / 'checkpoints/last.pth'}", f"engine.out_dir={tmp_path}",
                       check=False)
    assert result.returncode == 2
    assert "cannot resume" in result.stderr and "trained as resnest14" in result.stderr


@pytest.mark.parametrize("overrides,message", [
    (["optim.batch_size=1", "data.train_subset=64"], "batch size 1 per process with BatchNorm"),
    (["data.dataset=imagefolder", "data.root=/nonexistent/imagenet", "data.train_transform=imagenet"],
     "data folder /nonexistent/imagenet/train does not exist"),
    (["optim.lrr=0.1"], "did you mean 'optim.lr'"),
    (["engine.amp=fp16", "engine.device=cpu"], "fp16 needs a GPU"),
])
def test_bad_input_is_a_clear_error_before_training(tmp_path, overrides, message):
    result = splitattn("train", "--config", CONFIG, *TINY, *overrides, f"engine.out_dir={tmp_path}", check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()


def test_a_folder_that_holds_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, uninterrupted):
    """A second `train` into the same --out-dir must not replace a finished run's checkpoints and logs."""
    _require_fashion_mnist()
    out = tmp_path / "run"
    short = [*TINY, "optim.epochs=1", "data.train_subset=256", f"engine.out_dir={out}"]
    splitattn("train", "--config", CONFIG, *short)
    before = (out / "checkpoints/last.pth").read_bytes(), (out / "steps.jsonl").read_text()
    again = splitattn("train", "--config", CONFIG, *short, check=False)
    assert again.returncode == 2, again.stderr[-2000:]
    assert f"{out} already holds a run" in again.stderr and "--resume auto" in again.stderr
    assert "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert ((out / "checkpoints/last.pth").read_bytes(), (out / "steps.jsonl").read_text()) == before
    replaced = splitattn("train", "--config", CONFIG, *short, "optim.lr=0.01", "--overwrite")
    assert "top-1" in replaced.stdout
    assert (out / "checkpoints/last.pth").read_bytes() != before[0]
    assert len(losses(out)) == 4  # the new run's 4 steps, not appended to the old log


def test_unreadable_training_images_are_named_once_not_counted_per_load(tmp_path):
    from tests.test_data import make_folder

    root = make_folder(tmp_path / "data", per_class=3, broken=2)
    result = splitattn("train", "data.dataset=imagefolder", f"data.root={root}", "model.name=resnest14",
                       "data.train_crop=32", "data.eval_crop=32", "data.workers=0", "optim.batch_size=4",
                       "optim.epochs=3", "optim.warmup_epochs=0", *TINY[:2], "engine.progress=false",
                       "engine.tensorboard=false", f"engine.out_dir={tmp_path / 'run'}")
    note = next(line for line in result.stdout.splitlines() if line.startswith("skipped"))
    assert note.startswith("skipped 2 unreadable training image file(s): ") and note.count("broken") == 2, note


def _torchrun(out: Path, *extra: str, restarts: int = 0) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts", str(restarts),
               "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "-m", "splitattn", "train",
               "--config", CONFIG, *TINY, "engine.sync_bn=true", f"engine.out_dir={out}", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, uninterrupted):
    out = tmp_path_factory.mktemp("ddp")
    process = _torchrun(out)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return out, stdout


def test_torchrun_two_processes_match_one_process(two_processes, uninterrupted):
    out, stdout = two_processes
    assert "2 process(es) × 32 images (global batch 64" in stdout
    single, double = losses(uninterrupted), losses(out)
    assert sorted(double) == list(range(1, 97))
    # Same images, augmentation and sync-BN statistics: the first steps agree to float rounding. Later
    # steps drift apart as fp32 rounding differences grow through training (test_distributed.py shows
    # in fp64 that one step's loss and gradients are equal to 1e-8).
    assert all(double[s] == pytest.approx(single[s], rel=1e-4) for s in (1, 2, 3))
    assert double[96] < 0.6 * double[1]


def test_a_killed_rank_restarts_and_the_job_finishes(tmp_path, two_processes):
    out = tmp_path / "restart"
    process = _torchrun(out, "engine.resume=auto", "engine.checkpoint_every_steps=10", restarts=1)
    wait_for_steps(out, 25, process)
    workers = subprocess.run(["pgrep", "-f", f"engine.out_dir={out}"], capture_output=True, text=True).stdout.split()
    victims = [int(p) for p in workers if int(p) != process.pid and _is_worker(int(p))]
    assert victims, "no worker process found"
    os.kill(victims[-1], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert "resumed from" in stdout
    expected, got = losses(two_processes[0]), losses(out)
    assert sorted(got) == list(range(1, 97))
    assert all(got[s] == pytest.approx(expected[s], rel=1e-5, abs=1e-6) for s in expected)


def _is_worker(pid: int) -> bool:
    """A training worker, not torchrun's own agent process."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"torch.distributed.run" not in command


def test_max_steps_then_resume_to_the_end_then_resume_a_finished_run(tmp_path, uninterrupted):
    out = tmp_path / "capped"
    capped = splitattn("train", "--config", CONFIG, *TINY, "engine.max_steps=5", f"engine.out_dir={out}").stdout
    assert "stopped early: engine.max_steps=5 reached" in capped
    assert torch.load(out / "checkpoints/last.pth", weights_only=True)["step"] == 5
    splitattn("train", "--config", CONFIG, *TINY, "--resume", "auto", f"engine.out_dir={out}")
    expected, got = losses(uninterrupted), losses(out)
    assert all(got[s] == pytest.approx(expected[s], rel=1e-6, abs=1e-7) for s in expected)
    again = splitattn("train", "--config", CONFIG, *TINY, "--resume", "auto", f"engine.out_dir={out}").stdout
    assert "resumed from" in again and re.search(r"top-1 [\d.]+% on 256 images after 6 epoch\(s\), 96 steps",
                                                   again), again[-500:]


def test_two_torchrun_agents_as_two_nodes_match_one_process(tmp_path, uninterrupted):
    """`--nnodes 2`: two agents (one process each) meet in a c10d rendezvous on 127.0.0.1, as two machines would."""
    from tests.conftest import two_node_torchrun

    out = tmp_path / "two_nodes"
    agents = two_node_torchrun(["splitattn", "train", "--config", CONFIG, *TINY, "engine.sync_bn=true",
                                f"engine.out_dir={out}"], ENV)
    for agent in agents:
        assert agent.returncode == 0, agent.stderr[-3000:]
    assert "2 process(es) × 32 images (global batch 64" in agents[0].stdout + agents[1].stdout
    single, double = losses(uninterrupted), losses(out)
    assert sorted(double) == list(range(1, 97))
    assert all(double[s] == pytest.approx(single[s], rel=1e-4) for s in (1, 2, 3))  # as the one-node test
    assert double[96] < 0.6 * double[1]
