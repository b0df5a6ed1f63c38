"""The command line: list, info, download, demo, and errors that name the fix."""

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
    assert "true class 243 'bull mastiff'" in out
    assert "forward: (1, 3, 224, 224) -> (1, 1000)" in out
    assert "27.48 M params" in out and "C5 (2048, 28, 28) /8" in out


def test_predict_names_imagenet_classes_for_zoo_models(capsys):
    from tests.conftest import foolbox_photos

    photo = foolbox_photos()[0]
    assert main(["predict", "--model", "resnest14", str(photo), "--topk", "3"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == f"{photo}:" and len(rows) == 4
    from splitattn.inference import imagenet_categories

    names = set(imagenet_categories())
    assert all(row.split(maxsplit=2)[2] in names for row in rows[1:])
    assert main(["predict", "--checkpoint", str(photo), str(photo)]) == 2  # a JPEG is not a checkpoint
    assert "truncated or corrupt" in capsys.readouterr().err


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
