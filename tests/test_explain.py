"""Split-attention maps (splitattn.explain): the numbers against eq. 4 of the paper computed by hand, every
radix / cardinality layout, the radix-0 error, and `splitattn explain` on the shipped photos."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import splitattn
from splitattn.cli import main
from splitattn.data.sample_photos import PHOTOS_DIR
from splitattn.explain import ExplainError, explain
from splitattn.layers import SplitAttention
from tests.conftest import max_rel_diff, randomize_
from tests.test_data import _require_fashion_mnist
from tests.test_train import CONFIG
from tests.test_train import splitattn as run_splitattn

SMALL = dict(num_classes=10, base_planes=32, stem_width=16)  # the zoo layouts at half width: fast on the CPU


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode BatchNorm written out: (x - mean) / sqrt(var + eps) · γ + β."""
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _grouped_1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A grouped 1×1 conv on a (B, C_in) vector, one matrix product per group."""
    groups, out = conv.groups, []
    weight = conv.weight[:, :, 0, 0]
    n_in, n_out = x.shape[1] // groups, weight.shape[0] // groups
    for g in range(groups):
        w = weight[g * n_out:(g + 1) * n_out]
        out.append(x[:, g * n_in:(g + 1) * n_in] @ w.T + conv.bias[g * n_out:(g + 1) * n_out])
    return torch.cat(out, 1)


def _eq4_by_hand(block: SplitAttention, split_conv_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper eqs. 2-4 from the block's weights: a[b, r, k, c] (B, R, K, C/K) and the mixed output.

    Channel r·C + k·C/K + c of the split conv is split r of group k (radix-major); fc1 / fc2 are grouped by
    K, so fc2's outputs for group k are one contiguous run of R·C/K values, split-major inside the group.
    """
    radix, channels, groups = block.radix, block.channels, block.fc1.groups
    width = channels // groups
    u = F.relu(_bn(split_conv_out, block.bn0))
    splits = [u[:, r * channels:(r + 1) * channels] for r in range(radix)]
    s = sum(splits).mean((2, 3))                                           # eqs. 2-3: fuse, pool
    z = _grouped_1x1(F.relu(_bn(_grouped_1x1(s, block.fc1)[..., None, None], block.bn1)[:, :, 0, 0]), block.fc2)
    a = torch.empty(z.shape[0], radix, groups, width)
    for k in range(groups):
        logits = [z[:, k * radix * width + r * width: k * radix * width + (r + 1) * width] for r in range(radix)]
        if radix == 1:
            a[:, 0, k] = 1 / (1 + torch.exp(-logits[0]))                   # eq. 4, R = 1: sigmoid
        else:
            top = torch.stack(logits).amax(0)
            denom = sum(torch.exp(logit - top) for logit in logits)
            for r in range(radix):
                a[:, r, k] = torch.exp(logits[r] - top) / denom           # eq. 4: softmax over the R splits
    mixed = sum(a[:, r].reshape(-1, channels, 1, 1) * splits[r] for r in range(radix))  # eq. 1's weighted sum
    return a, mixed


def _hooked_blocks(model: nn.Module) -> tuple[dict, list]:
    """Forward hooks that keep each split-attention block's split-conv output and final output."""
    seen: dict[str, dict] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, SplitAttention):
            seen[name] = {"module": module}
            handles.append(module.conv.register_forward_hook(
                lambda _m, _i, out, name=name: seen[name].__setitem__("conv", out.detach().clone())))
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: seen[name].__setitem__("out", out.detach().clone())))
    return seen, handles


@pytest.mark.parametrize("name, overrides", [
    ("resnest14", {}),                                         # R 2, K 1
    ("resnest50_fast_1s1x64d", {}),                            # R 1: the sigmoid gate
    ("resnest50_fast_4s2x40d", {}),                            # R 4, K 2
    ("resnest50_fast_1s4x24d", {}),                            # R 1, K 4
    ("resnest50_fast_2s2x40d", {"deform_stages": (2, 3, 4), "deform_groups": 2}),  # DCN backbone
])
def test_shares_are_eq4_computed_by_hand(name, overrides):
    model = randomize_(splitattn.create_model(name, **SMALL, **overrides), seed=3, image_size=64, batch=4)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen, handles = _hooked_blocks(model)
    try:
        maps = explain(model, images)
    finally:
        for handle in handles:
            handle.remove()
    assert maps.blocks == list(seen)
    with torch.no_grad():
        for block, record in seen.items():
            a, mixed = _eq4_by_hand(record["module"], record["conv"])
            # a weighs the channels it should (a wrong layout is off by O(1); float32 BN on random nets by ~1e-5)
            assert max_rel_diff(record["out"], mixed) < 1e-4, block
            torch.testing.assert_close(maps.shares[block], a.mean(-1), rtol=1e-5, atol=1e-6)
            if maps.radix > 1:
                entropy = -torch.where(a > 0, a * a.log(), 0.0).sum(1) / math.log(maps.radix)  # 0·log 0 = 0
                torch.testing.assert_close(maps.entropy[block], entropy.mean(-1), rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(maps.dominant[block], a.amax(1).mean(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, radix, cardinality, blocks", [
    ("resnest14", 2, 1, 4),
    ("resnest50_fast_1s1x64d", 1, 1, 16), ("resnest50_fast_2s1x64d", 2, 1, 16), ("resnest50_fast_4s1x64d", 4, 1, 16),
    ("resnest50_fast_1s2x40d", 1, 2, 16), ("resnest50_fast_2s2x40d", 2, 2, 16), ("resnest50_fast_4s2x40d", 4, 2, 16),
    ("resnest50_fast_1s4x24d", 1, 4, 16),
    ("resnest269", 2, 1, 89),
])
def test_shapes_and_sums_per_variant(name, radix, cardinality, blocks):
    model = splitattn.create_model(name, **{**SMALL, "base_planes": 8 if name == "resnest269" else 32}).train()
    maps = explain(model, torch.randn(2, 3, 32, 32), classes=[f"c{i}" for i in range(10)])
    assert model.training, "explain restores the train/eval mode it found"
    assert (maps.radix, maps.cardinality, len(maps.blocks)) == (radix, cardinality, blocks)
    assert maps.blocks[0] == "layer1.0.conv2" and maps.blocks[-1].startswith("layer4.")
    assert maps.stacked().shape == (2, blocks, radix, cardinality)
    assert maps.gate == (radix == 1)
    if radix > 1:
        torch.testing.assert_close(maps.stacked().sum(2), torch.ones(2, blocks, cardinality))
        assert all(((e >= -1e-6) & (e <= 1 + 1e-6)).all() for e in maps.entropy.values())
        assert all((d >= 1 / radix - 1e-6).all() for d in maps.dominant.values())
    else:
        assert not maps.entropy and ((maps.stacked() > 0) & (maps.stacked() < 1)).all()  # sigmoid gates
    assert maps.predicted.shape == (2,) and ((maps.probability > 0) & (maps.probability <= 1)).all()
    assert all(name.startswith("c") for name in maps.predicted_names())
    assert not any(m._forward_hooks for m in model.modules()), "the hooks are removed"


@pytest.mark.parametrize("name", ["resnet50d", "resnext50d_32x4d"])
def test_radix_zero_is_an_error_naming_why(name):
    model = splitattn.create_model(name, **SMALL)
    with pytest.raises(ExplainError, match="radix 0") as err:
        explain(model, torch.randn(1, 3, 32, 32))
    assert "\n" not in str(err.value) and "resnest50" in str(err.value)


def test_pil_images_need_a_transform():
    from PIL import Image

    model = splitattn.create_model("resnest14", **SMALL)
    with pytest.raises(ExplainError, match="transform"):
        explain(model, Image.new("RGB", (64, 64)))
    maps = explain(model, [Image.new("RGB", (64, 64))] * 2, splitattn.create_transform("resnest14"))
    assert maps.shares["layer4.0.conv2"].shape == (2, 2, 1)


# ----------------------------------------------------------------------------- the CLI


def _photos(tmp_path, count=4):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(PHOTOS_DIR.glob("*.jpg"))[:count]:
        shutil.copy(photo, folder / photo.name)
    return folder


def test_cli_one_photo_writes_png_and_json(tmp_path, capsys):
    photo = PHOTOS_DIR / "chelsea.jpg"
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--model", "resnest14", "--out", str(out), "--device", "cpu"]) == 0
    png, record = out / "chelsea.split_attention.png", json.loads((out / "chelsea.split_attention.json").read_text())
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert record["radix"] == 2 and record["kind"] == "share" and "eq. 4" in record["definition"]
    (image,) = record["images"]
    assert image["path"] == "chelsea.jpg" and 0 < image["probability"] <= 1
    assert list(image["shares"]) == record["blocks"] == [f"layer{i}.0.conv2" for i in range(1, 5)]
    assert all(abs(sum(r[0] for r in shares) - 1) < 1e-4 for shares in image["shares"].values())
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "resnest14 (random weights)" in last and str(png) in last

    # an existing output is not replaced silently
    assert main(["explain", str(photo), "--model", "resnest14", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["explain", str(photo), "--model", "resnest14", "--out", str(out), "--overwrite"]) == 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A classification training checkpoint: a tiny ResNeSt trained for 4 steps on real Fashion-MNIST."""
    _require_fashion_mnist()
    out = tmp_path_factory.mktemp("tiny_run")
    run_splitattn("train", "--config", CONFIG, "engine.device=cpu", "engine.compile=false", "engine.amp=none",
              "model.overrides.base_planes=8", "model.overrides.stem_width=8", "data.train_subset=128",
              "data.val_subset=64", "optim.batch_size=32", "optim.epochs=1", "optim.warmup_epochs=0",
              "engine.progress=false", "engine.tensorboard=false", f"engine.out_dir={out}")
    return out / "checkpoints" / "last.pth"


def test_cli_folder_with_a_training_checkpoint(tmp_path, checkpoint, capsys):
    folder = _photos(tmp_path)
    (folder / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (folder / "broken.png").write_text("not a PNG")    # skipped and reported
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "3"]) == 0
    record = json.loads((out / "photos.split_attention.json").read_text())
    assert (out / "photos.split_attention_by_class.png").stat().st_size > 5_000
    assert [i["path"] for i in record["images"]] == ["camera.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert record["skipped"] == [str(folder / "broken.png")]
    fashion = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
    assert set(record["by_class"]) <= fashion and sum(c["count"] for c in record["by_class"].values()) == 4
    for name, summary in record["by_class"].items():  # the class means are the means of the members
        members = [i for i in record["images"] if i["predicted"] == name]
        block = record["blocks"][-1]
        mean = sum(m["shares"][block][0][0] for m in members) / len(members)
        assert abs(summary["shares"][block][0][0] - mean) < 1e-4
    assert "skipped 1 unreadable" in capsys.readouterr().out


def test_cli_without_matplotlib_still_writes_the_numbers(tmp_path, capsys, monkeypatch):
    from splitattn.engine import plots
    from splitattn.optional import MissingDependency

    def missing(module, purpose):
        raise MissingDependency(f"{purpose} needs matplotlib, which is not installed: pip install 'splitattn[plots]'")

    monkeypatch.setattr(plots, "require", missing)
    out = tmp_path / "out"
    assert main(["explain", str(PHOTOS_DIR / "coffee.jpg"), "--model", "resnest14", "--out", str(out)]) == 0
    assert (out / "coffee.split_attention.json").is_file() and not (out / "coffee.split_attention.png").exists()
    assert "splitattn[plots]" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "photo.jpg"
    text.write_text("not a JPEG")
    photo = str(PHOTOS_DIR / "rocket.jpg")
    cases = [
        ([str(tmp_path / "missing.jpg"), "--model", "resnest14"], "does not exist"),
        ([str(empty), "--model", "resnest14"], "holds no images"),
        ([str(text), "--model", "resnest14"], "not a readable image"),
        ([photo, "--model", "resnet50d"], "radix 0"),
        ([photo, "--model", "resnext50d_32x4d"], "radix 0"),
        ([photo], "--model NAME"),
        ([photo, "--checkpoint", photo], "checkpoint"),
    ]
    for args, cause in cases:
        assert main(["explain", *args, "--out", str(tmp_path / "out")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert cause in err and len(err.splitlines()) == 1 and err.startswith("splitattn explain: error:"), err
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"
