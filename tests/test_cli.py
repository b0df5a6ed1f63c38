"""The command line: list, info, download, demo, --device everywhere, and errors that name the fix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from splitattn.cli import main


def test_list_prints_measured_and_published_figures(capsys):
    assert main(["list", "resnest*0"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("resnest50 "))
    assert row.split()[1:5] == ["27.48", "27.48", "5.37", "5.37"]
    assert "resnest200" in out and "resnest14 " not in out


def test_list_filters(capsys):
    assert main(["list", "--tag", "baseline"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:-1]]
    assert rows == ["resnet50d", "resnext50d_32x4d"]
    assert main(["list", "--pretrained", "res*"]) == 0
    assert "resnet50d" not in capsys.readouterr().out


def test_info_text_and_json(capsys):
    assert main(["info", "resnest101e"]) == 0  # a timm alias
    out = capsys.readouterr().out
    assert "resnest101: ResNeSt-101" in out and "13.32 GMACs at 256" in out and "22405ba7" in out
    assert main(["info", "resnest50_fast_1s4x24d", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["measured"]["params_m"] == pytest.approx(25.68, abs=0.005)
    assert info["arch"]["cardinality"] == 4


def test_unknown_model_exits_2_with_a_suggestion(capsys):
    assert main(["info", "resnest_50"]) == 2
    assert "Did you mean 'resnest50'" in capsys.readouterr().err


def test_console_script_help_runs_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "splitattn", "--help"], capture_output=True, text=True, check=True)
    for command in ("list", "info", "download", "demo"):
        assert command in out.stdout


def test_demo_runs_a_real_photo(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "chelsea.jpg" in out and "true class 281 'tabby'" in out  # a CC0 photo shipped with splitattn
    assert "forward: (1, 3, 224, 224) -> (1, 1000)" in out
    assert "27.48 M params" in out and "C5 (2048, 28, 28) /8" in out


def test_predict_names_imagenet_classes_for_zoo_models(capsys):
    from tests.conftest import foolbox_photos

    photo = foolbox_photos()[0]
    assert main(["predict", "--model", "resnest14", str(photo), "--topk", "3"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == f"{photo}:" and len(rows) == 4
    from splitattn.classification.inference import imagenet_categories

    names = set(imagenet_categories())
    assert all(row.split(maxsplit=2)[2] in names for row in rows[1:])
    assert main(["predict", "--checkpoint", str(photo), str(photo)]) == 2  # a JPEG is not a checkpoint
    assert f"{photo} is not a checkpoint: it is an image" in capsys.readouterr().err


def test_predict_with_the_deploy_form_gives_the_same_answer(capsys):
    from tests.conftest import foolbox_photos

    photo = str(foolbox_photos()[1])
    torch.manual_seed(0)  # random weights: the same ones twice
    assert main(["predict", "--model", "resnest14", photo, "--topk", "3"]) == 0
    plain = capsys.readouterr().out
    torch.manual_seed(0)
    assert main(["predict", "--model", "resnest14", photo, "--topk", "3", "--deploy"]) == 0
    fused = capsys.readouterr().out
    names = [line.split(maxsplit=2)[2] for line in plain.splitlines()[1:]]
    assert names == [line.split(maxsplit=2)[2] for line in fused.splitlines()[1:]]


def _verbs(parser) -> dict:
    """Every leaf command of the CLI: {'predict': parser, 'detect eval': parser, ...}."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                leaves = _verbs(sub)
                found.update({f"{name} {k}": v for k, v in leaves.items()} if leaves else {name: sub})
    return found


def test_every_verb_that_runs_a_model_takes_device():
    from splitattn.cli import build_parser

    verbs = _verbs(build_parser())
    runs_models = {"train", "eval", "predict", "demo", "bench", "detect train", "detect eval", "detect predict",
                   "segment train", "segment eval", "segment predict", "explain"}
    assert runs_models <= set(verbs)
    for verb in runs_models:
        assert "--device" in verbs[verb].format_help(), verb
    # the rest reads files or the zoo only: list, info, download, convert; export runs its check on the CPU, and
    # quantize builds a CPU package (oneDNN int8)
    assert set(verbs) - runs_models == {"list", "info", "download", "convert", "export", "quantize"}


@pytest.mark.parametrize("args,message", [
    (["predict", "--model", "resnest14", "x.jpg", "--topk", "-3"], "argument --topk: must be >= 1, got -3"),
    (["eval", "--model", "resnest14", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["eval", "--model", "resnest14", "--batch-size", "two"], "argument --batch-size: 'two' is not a whole number"),
    (["detect", "predict", "--checkpoint", "c.pth", "x.jpg", "--score-thresh", "1.5"],
     "argument --score-thresh: must be in [0, 1], got 1.5"),
    (["segment", "eval", "--checkpoint", "c.pth", "--scales", "1,-2"], "scales must be positive numbers"),
    (["bench", "--repeats", "0"], "argument --repeats: must be >= 1"),
    (["predict", "--model", "resnest14", "x.jpg", "--max-pixels", "-1"], "argument --max-pixels: must be >= 0"),
])
def test_bad_numbers_name_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_cuda_without_a_gpu_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    assert main(["predict", "--model", "resnest14", "x.jpg", "--device", "cuda"]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_ctrl_c_during_eval_says_interrupted_and_exits_130(tmp_path):
    """SIGINT while `eval` runs over a folder: one line and exit code 130, not a traceback."""
    import signal
    import time

    from tests.conftest import foolbox_photos

    photo = foolbox_photos()[0]
    for label in range(1000):  # an ImageNet-shaped folder: 1000 classes, one (linked) photo each
        (tmp_path / "val" / f"n{label:04d}").mkdir(parents=True)
        (tmp_path / "val" / f"n{label:04d}" / "photo.jpg").symlink_to(photo)
    # a shell without job control (CI, `cmd &`) starts its children with SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: give the child the default disposition a terminal's Ctrl-C meets
    process = subprocess.Popen([sys.executable, "-m", "splitattn", "eval", "--model", "resnest50", "--data",
                                str(tmp_path), "--batch-size", "1", "--workers", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = process.stdout.readline()  # printed just before the first batch
    assert started.startswith("evaluating resnest50 (random weights)"), started + process.communicate()[1][-2000:]
    time.sleep(1)
    assert process.poll() is None, process.communicate()[1][-2000:]
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "splitattn eval: interrupted" and "Traceback" not in err
