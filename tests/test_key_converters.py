"""Backbone key converters: official (= timm) ↔ detectron2 ↔ mmdet names, wrappers, files."""

from __future__ import annotations

import pytest
import resnest.torch as official
import timm
import torch

from splitattn import create_model
from splitattn.models.key_converters import (
    LAYOUTS,
    convert_checkpoint_file,
    detect_layout,
    from_official,
    to_official,
)
from splitattn.models.weights import CheckpointError


@pytest.fixture(scope="module", params=["resnest50", "resnet50d"])
def case(request):
    """(name, headless model, official state_dict with every tensor distinct, so a swapped mapping shows)."""
    model = create_model(request.param, num_classes=0)
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else torch.randint(0, 99, v.shape,
                                                                                                generator=gen)
          for k, v in model.state_dict().items()}
    return request.param, model, sd


def _assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key] is value or torch.equal(got[key], value), key


def _load_strict(model, sd) -> None:
    model.load_state_dict(sd, strict=True)
    loaded = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(loaded[key], value), key


# An independent, hand-written reading of the layout tables (resnest/d2/resnest.py + splat.py;
# mmdet backbones/resnet.py + resnest.py + layers/res_layer.py), used as the oracle for from_official.
_D2_STEM = {"conv1.0": "stem.conv1_1", "conv1.1": "stem.conv1_1.norm", "conv1.3": "stem.conv1_2",
            "conv1.4": "stem.conv1_2.norm", "conv1.6": "stem.conv1_3", "bn1": "stem.conv1_3.norm"}
_D2_BLOCK = {"bn1": "conv1.norm", "bn2": "conv2.norm", "bn3": "conv3.norm",
             "downsample.1": "shortcut", "downsample.2": "shortcut.norm"}
_MM_STEM = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4",
            "conv1.6": "stem.6", "bn1": "stem.7"}


def _d2_name(key: str) -> str:
    module, tensor = key.rsplit(".", 1)
    if module in _D2_STEM:
        return f"{_D2_STEM[module]}.{tensor}"
    layer, block, inner = module.split(".", 2)
    return f"res{int(layer[5:]) + 1}.{block}.{_D2_BLOCK.get(inner, inner)}.{tensor}"


def _mm_name(key: str) -> str:
    module, tensor = key.rsplit(".", 1)
    return f"{_MM_STEM.get(module, module)}.{tensor}"


@pytest.mark.parametrize("target", LAYOUTS)
def test_round_trip_is_exact(case, target):
    _, _, sd = case
    there = from_official(sd, target)
    assert detect_layout(there) == target
    for source in ("auto", target):
        back, notes = to_official(there, source)
        _assert_same(back, sd)
        assert all(back[k] is sd[k] for k in sd)  # renamed, never copied
        assert f"layout {target}" in notes[-1]


def test_detectron2_names(case):
    name, model, sd = case
    d2 = from_official(sd, "detectron2")
    assert list(d2) == [_d2_name(k) for k in sd]
    literal = {  # d2 name → official name
        "stem.conv1_1.weight": "conv1.0.weight",
        "stem.conv1_2.norm.running_mean": "conv1.4.running_mean",
        "stem.conv1_3.weight": "conv1.6.weight",
        "stem.conv1_3.norm.weight": "bn1.weight",
        "res2.0.conv1.norm.bias": "layer1.0.bn1.bias",
        "res2.0.shortcut.weight": "layer1.0.downsample.1.weight",
        "res3.0.shortcut.norm.running_var": "layer2.0.downsample.2.running_var",
        "res5.2.conv3.weight": "layer4.2.conv3.weight",
        "res5.2.conv3.norm.weight": "layer4.2.bn3.weight",
    }
    if name == "resnest50":
        literal |= {"res3.1.conv2.conv.weight": "layer2.1.conv2.conv.weight",
                    "res3.1.conv2.bn0.weight": "layer2.1.conv2.bn0.weight",
                    "res3.1.conv2.fc1.weight": "layer2.1.conv2.fc1.weight",
                    "res3.1.conv2.fc1.bias": "layer2.1.conv2.fc1.bias",
                    "res3.1.conv2.bn1.running_mean": "layer2.1.conv2.bn1.running_mean",
                    "res4.5.conv2.fc2.bias": "layer3.5.conv2.fc2.bias"}
        assert d2["stem.conv1_1.weight"].shape == (32, 3, 3, 3)
    else:  # radix 0: a plain conv with its norm
        literal |= {"res3.1.conv2.weight": "layer2.1.conv2.weight",
                    "res3.1.conv2.norm.running_mean": "layer2.1.bn2.running_mean"}
    for d2_key, official_key in literal.items():
        assert d2[d2_key] is sd[official_key], d2_key
    converted, _ = to_official(d2)
    _load_strict(model, converted)


def test_mmdet_names(case):
    name, model, sd = case
    mm = from_official(sd, "mmdet")
    assert list(mm) == [_mm_name(k) for k in sd]
    literal = {"stem.0.weight": "conv1.0.weight", "stem.1.running_var": "conv1.1.running_var",
               "stem.3.weight": "conv1.3.weight", "stem.6.weight": "conv1.6.weight", "stem.7.bias": "bn1.bias",
               "layer1.0.bn1.weight": "layer1.0.bn1.weight",
               "layer1.0.downsample.1.weight": "layer1.0.downsample.1.weight",
               "layer3.0.downsample.2.running_mean": "layer3.0.downsample.2.running_mean",
               "layer4.2.bn3.weight": "layer4.2.bn3.weight"}
    literal |= ({"layer2.1.conv2.bn0.weight": "layer2.1.conv2.bn0.weight",
                 "layer2.1.conv2.fc1.bias": "layer2.1.conv2.fc1.bias"} if name == "resnest50"
                else {"layer2.1.bn2.weight": "layer2.1.bn2.weight"})
    for mm_key, official_key in literal.items():
        assert mm[mm_key] is sd[official_key], mm_key
    converted, _ = to_official(mm)
    _load_strict(model, converted)


def test_detectron2_detector_checkpoint(case):
    _, model, sd = case
    t = torch.zeros(3)
    ckpt = {"model": {"backbone.bottom_up." + k: v for k, v in from_official(sd, "detectron2").items()}
            | {"backbone.fpn_lateral2.weight": t, "backbone.fpn_lateral2.bias": t,
               "proposal_generator.rpn_head.conv.weight": t, "roi_heads.box_predictor.cls_score.weight": t},
            "iteration": 89999, "__author__": "someone"}
    assert detect_layout(ckpt) == "detectron2"
    converted, notes = to_official(ckpt)
    _assert_same(converted, sd)
    text = "\n".join(notes)
    assert "unwrapped checkpoint['model'] (ignored: __author__, iteration)" in text
    assert "'backbone.bottom_up.'" in text
    assert "dropped 4 non-backbone tensors" in text
    for module in ("backbone.fpn_lateral2 (2)", "proposal_generator.rpn_head.conv (1)",
                   "roi_heads.box_predictor.cls_score (1)"):
        assert module in text
    _load_strict(model, converted)


def test_mmdet_detector_and_mmpretrain_checkpoints(case):
    _, model, sd = case
    t = torch.zeros(3)
    mm = from_official(sd, "mmdet", prefix="backbone.")
    ckpt = {"meta": {"epoch": 12}, "state_dict": mm | {"neck.lateral_convs.0.conv.weight": t,
                                                       "rpn_head.rpn_conv.weight": t}}
    converted, notes = to_official(ckpt)
    _assert_same(converted, sd)
    text = "\n".join(notes)
    assert "unwrapped checkpoint['state_dict'] (ignored: meta)" in text
    assert "dropped 2 non-backbone tensors: neck.lateral_convs.0.conv (1), rpn_head.rpn_conv (1)" in text
    _load_strict(model, converted)

    fc_w, fc_b = torch.randn(10, 2048), torch.randn(10)  # mmpretrain classifier: head.fc → fc
    converted, notes = to_official({"state_dict": mm | {"head.fc.weight": fc_w, "head.fc.bias": fc_b}})
    assert converted["fc.weight"] is fc_w and converted["fc.bias"] is fc_b
    assert any("head.fc as fc" in n for n in notes)


def test_ddp_prefix_and_frozen_bn(case):
    _, model, sd = case
    converted, notes = to_official({"state_dict": {"module." + k: v for k, v in sd.items()}})
    _assert_same(converted, sd)
    assert any("'module.'" in n for n in notes)
    # detectron2 FrozenBatchNorm2d has no num_batches_tracked: still a strict load
    frozen = {k: v for k, v in from_official(sd, "detectron2").items() if not k.endswith("num_batches_tracked")}
    converted, notes = to_official(frozen)
    assert any("num_batches_tracked" in n for n in notes)
    model.load_state_dict(converted, strict=True)


def test_unknown_layouts_and_keys_are_clear_errors():
    t = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unrecognised state_dict layout.*saw 2 keys: encoder\.w, decoder\.w"):
        detect_layout({"encoder.w": t, "decoder.w": t})
    with pytest.raises(ValueError, match="unrecognised state_dict layout"):
        to_official({"state_dict": {"encoder.w": t}})
    with pytest.raises(ValueError, match="not a state_dict.*epoch"):
        to_official({"epoch": 3, "w": t})
    with pytest.raises(ValueError, match="unknown layout 'caffe2'"):
        to_official({"conv1.0.weight": t}, source="caffe2")
    with pytest.raises(ValueError, match="unknown layout 'auto'"):
        from_official({"conv1.0.weight": t}, "auto")
    with pytest.raises(ValueError, match=r"not official.*layer1\.0\.se\.fc\.weight"):
        from_official({"conv1.0.weight": t, "layer1.0.se.fc.weight": t}, "mmdet")
    # deformable-conv blocks cannot be represented: an error, not a silent drop
    with pytest.raises(ValueError, match=r"res3\.0\.conv2_offset\.weight.*DCN"):
        to_official({"stem.conv1_1.weight": t, "res3.0.conv2_offset.weight": t})
    # a layout forced by hand that does not fit
    with pytest.raises(ValueError, match="no official counterpart in the mmdet layout"):
        to_official({"stem.conv1_1.weight": t, "res2.0.conv1.weight": t}, source="mmdet")


def test_convert_checkpoint_file(case, tmp_path):
    _, model, sd = case
    src, dst = tmp_path / "mask_rcnn.pth", tmp_path / "out" / "backbone.pth"
    ckpt = {"model": {"backbone.bottom_up." + k: v for k, v in from_official(sd, "detectron2").items()}
            | {"backbone.fpn_output5.weight": torch.zeros(2)}, "iteration": 7}
    torch.save(ckpt, src)
    notes = convert_checkpoint_file(src, dst)
    assert notes[-1] == f"wrote {len(sd)} tensors to {dst}"
    assert any("backbone.fpn_output5 (1)" in n for n in notes)
    _assert_same(torch.load(dst, map_location="cpu", weights_only=True), sd)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["backbone.pth"]  # no temporary file left

    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    with pytest.raises(CheckpointError, match=r"\.pkl pickle.*convert it to \.pth first"):
        convert_checkpoint_file(pkl, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_checkpoint_file(tmp_path / "missing.pth", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("build", [lambda: official.resnest50(pretrained=False),
                                   lambda: timm.create_model("resnest50d", pretrained=False),
                                   lambda: timm.create_model("resnet50d", pretrained=False)],
                         ids=["official-resnest50", "timm-resnest50d", "timm-resnet50d"])
def test_reference_models_are_the_official_layout(build):
    """The official torch and timm state_dicts (with their fc) go through every layout and back unchanged."""
    sd = build().state_dict()
    assert detect_layout(sd) == "official"
    for target in LAYOUTS:
        back, _ = to_official(from_official(sd, target))
        assert list(back) == list(sd)
    assert from_official(sd, "detectron2")["linear.weight"] is sd["fc.weight"]
