"""Backbone key converters: official (= timm) ↔ detectron2 ↔ mmdet ↔ mmpretrain names, wrappers, files."""

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

    fc_w, fc_b = torch.randn(10, 2048), torch.randn(10)  # a head.fc beside mmdet names is still read as fc
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
    # the plug-in's deformable convs map; mmcv's DCN packs cannot be represented: an error, not a silent drop
    mapped, _ = to_official({"stem.conv1_1.weight": t, "res3.0.conv2_offset.weight": t})
    assert mapped["layer2.0.conv2_offset.weight"] is t
    with pytest.raises(ValueError, match=r"layer2\.0\.conv2\.conv\.conv_offset\.weight.*mmcv's DCN"):
        to_official({"stem.0.weight": t, "layer2.0.conv2.conv.conv_offset.weight": t})
    with pytest.raises(ValueError, match=r"not official.*layer2\.0\.conv2_offset\.weight"):
        from_official({"conv1.0.weight": t, "layer2.0.conv2_offset.weight": t}, "mmdet")
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


# mmpretrain (open-mmlab/mmpretrain backbones/resnet.py + resnest.py), written out by hand as the oracle:
# the deep stem is three mmcv ``ConvModule``s (children ``conv`` and ``bn``), and mmpretrain's ``ResLayer`` adds
# the avg-down ``AvgPool2d`` only when ``stride != 1``, so the stride-1 layer1.0 shortcut is ``downsample.0``
# (conv) + ``downsample.1`` (BN) while layers 2-4 keep ``downsample.1/2``. The classifier is ``head.fc``.
_MMPRE_STEM = {"conv1.0": "stem.0.conv", "conv1.1": "stem.0.bn", "conv1.3": "stem.1.conv",
               "conv1.4": "stem.1.bn", "conv1.6": "stem.2.conv", "bn1": "stem.2.bn"}
_MMPRE_STRIDE1_SHORTCUT = {"layer1.0.downsample.1": "layer1.0.downsample.0",
                           "layer1.0.downsample.2": "layer1.0.downsample.1"}


def _mmpretrain_checkpoint(sd: dict) -> dict:
    """An mmpretrain ``ImageClassifier`` checkpoint holding the official-layout ``sd``."""
    state = {}
    for key, value in sd.items():
        module, tensor = key.rsplit(".", 1)
        if module == "fc":
            state[f"head.fc.{tensor}"] = value
        else:
            module = _MMPRE_STEM.get(module, _MMPRE_STRIDE1_SHORTCUT.get(module, module))
            state[f"backbone.{module}.{tensor}"] = value
    return {"meta": {}, "state_dict": state}


@pytest.fixture(scope="module", params=["resnest14", "resnet50d"])
def classifier(request):
    """(name, eval-mode classifier with random weights and BN statistics, its state_dict, input, logits)."""
    torch.manual_seed(0)
    model = create_model(request.param, num_classes=10).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    return request.param, model, model.state_dict(), x, logits


def test_mmpretrain_layout_is_what_mmpretrain_writes(classifier):
    _, _, sd, _, _ = classifier
    ckpt = _mmpretrain_checkpoint(sd)
    state = ckpt["state_dict"]
    for key in ("backbone.stem.0.conv.weight", "backbone.stem.0.bn.running_var", "backbone.stem.2.bn.weight",
                "backbone.layer1.0.downsample.0.weight", "backbone.layer1.0.downsample.1.running_mean",
                "backbone.layer2.0.downsample.1.weight", "backbone.layer2.0.downsample.2.weight",
                "backbone.layer4.0.downsample.2.num_batches_tracked", "head.fc.weight", "head.fc.bias"):
        assert key in state, key
    assert state["backbone.layer1.0.downsample.0.weight"].dim() == 4  # the conv, no pool before it
    assert state["backbone.layer1.0.downsample.1.weight"].dim() == 1  # the BN
    assert "backbone.layer1.0.downsample.2.weight" not in state
    assert not any(k.startswith("backbone.stem.3") for k in state)
    # mmpretrain is not the mmdet layout: both are detected, and told apart
    assert detect_layout(ckpt) == "mmpretrain"
    assert detect_layout(from_official(sd, "mmdet", prefix="backbone.")) == "mmdet"
    assert list(from_official(sd, "mmpretrain", prefix="backbone.")) == list(state)
    _assert_same(from_official(sd, "mmpretrain", prefix="backbone."), state)


@pytest.mark.parametrize("source", ["auto", "mmpretrain"])
def test_convert_mmpretrain_checkpoint_file(classifier, source, tmp_path):
    name, _, sd, x, logits = classifier
    src, dst = tmp_path / "mmpretrain_resnest.pth", tmp_path / "official.pth"
    torch.save(_mmpretrain_checkpoint(sd), src)
    notes = convert_checkpoint_file(src, dst, source=source)
    text = "\n".join(notes)
    assert "unwrapped checkpoint['state_dict'] (ignored: meta)" in text
    assert "layout mmpretrain" + (" (auto-detected)" if source == "auto" else "") in text
    assert notes[-1] == f"wrote {len(sd)} tensors to {dst}"
    converted = torch.load(dst, map_location="cpu", weights_only=True)
    _assert_same(converted, sd)
    fresh = create_model(name, num_classes=10).eval()
    fresh.load_state_dict(converted, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), logits)


def test_mmpretrain_round_trip(classifier):
    _, _, sd, _, _ = classifier
    there = from_official(sd, "mmpretrain", prefix="backbone.")
    assert there["head.fc.weight"] is sd["fc.weight"]  # the classifier is not under the backbone prefix
    assert there["backbone.layer1.0.downsample.0.weight"] is sd["layer1.0.downsample.1.weight"]
    assert there["backbone.layer1.0.downsample.1.running_var"] is sd["layer1.0.downsample.2.running_var"]
    assert there["backbone.layer3.0.downsample.1.weight"] is sd["layer3.0.downsample.1.weight"]
    for source in ("auto", "mmpretrain"):
        back, notes = to_official({"meta": {}, "state_dict": there}, source)
        _assert_same(back, sd)
        assert all(back[k] is sd[k] for k in sd)
        assert f"layout mmpretrain{' (auto-detected)' if source == 'auto' else ''}" in notes[-1]


def test_mmpretrain_shortcuts_are_read_per_block(classifier):
    """A stride-1 (pool-less) shortcut anywhere, e.g. a dilated mmpretrain stage, is read from its keys."""
    _, _, sd, _, _ = classifier
    state = dict(_mmpretrain_checkpoint(sd)["state_dict"])
    state = {k.replace("layer4.0.downsample.1.", "layer4.0.downsample.0.")
             .replace("layer4.0.downsample.2.", "layer4.0.downsample.1."): v for k, v in state.items()}
    converted, _ = to_official(state)
    _assert_same(converted, sd)
    # a block with both a pool-less conv (downsample.0) and downsample.2 is ambiguous: an error
    state["backbone.layer4.0.downsample.2.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"layer4\.0\.downsample"):
        to_official(state)
    # mmpretrain keys forced through the mmdet table do not fit, and the reverse
    with pytest.raises(ValueError, match="no official counterpart in the mmdet layout.*source='mmpretrain'"):
        to_official(_mmpretrain_checkpoint(sd), source="mmdet")
    with pytest.raises(ValueError, match="no official counterpart in the mmpretrain layout"):
        to_official(from_official(sd, "mmdet"), source="mmpretrain")
