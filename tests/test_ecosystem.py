"""Our models where users already live: timm's registry and create_model, segmentation_models_pytorch's ``tu-``
encoders (against the official package's dilated ResNeSt on the same weights), and torch.hub."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import resnest.torch as official
import segmentation_models_pytorch as smp
import timm
import torch
from timm.data import resolve_data_config

import splitattn
import splitattn.timm_bridge  # noqa: F401  (registers splitattn_* in timm)
from splitattn import ResNeSt, ResNeStFeatures
from splitattn.detection.zoo import list_detectors
from splitattn.segmentation.zoo import list_segmenters
from tests.conftest import max_rel_diff, randomize_

ROOT = Path(__file__).resolve().parents[1]


def test_every_zoo_model_is_in_timms_registry_with_its_pretrained_cfg():
    names = timm.list_models("splitattn_*")
    assert set(names) == {f"splitattn_{n}" for n in splitattn.list_models()}
    with_weights = {f"splitattn_{n}" for n in splitattn.list_models() if splitattn.get_entry(n).checkpoint}
    assert set(timm.list_models("splitattn_*", pretrained=True)) == with_weights
    cfg = timm.get_pretrained_cfg("splitattn_resnest101")
    assert (cfg.test_input_size, cfg.crop_pct, cfg.interpolation) == ((3, 256, 256), 256 / 288, "bicubic")
    assert cfg.hf_hub_id == "timm/resnest101e.in1k" and cfg.paper_ids == "arXiv:2004.08955"


def test_timm_create_model_builds_ours_with_timms_arguments(tmp_path):
    model = timm.create_model("splitattn_resnest14", num_classes=7, in_chans=1, drop_rate=0.1, global_pool="avgmax")
    assert isinstance(model, ResNeSt) and model.fc.out_features == 7 and model.in_chans == 1
    assert model.global_pool.pool_type == "avgmax"
    assert resolve_data_config({}, model=model)["input_size"] == (1, 224, 224)
    features = timm.create_model("splitattn_resnest14", features_only=True, output_stride=16)
    assert isinstance(features, ResNeStFeatures)
    assert features.feature_info.reduction() == [2, 4, 8, 16, 16]  # timm's default out_indices: all five
    with pytest.raises(ValueError, match="no stochastic depth"):
        timm.create_model("splitattn_resnest14", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="one set of weights"):
        timm.create_model("splitattn_resnest14.in1k")
    with pytest.raises(ValueError, match=r"\['mean'\] are not used"):
        timm.create_model("splitattn_resnest14", pretrained=True, pretrained_cfg_overlay=dict(mean=(0.5,) * 3))
    assert splitattn.timm_bridge._weights_source(True, dict(hf_hub_id="me/mine")) == "hf-hub:me/mine"


def test_pretrained_through_timm_loads_the_file_it_is_pointed_at(tmp_path):
    source = randomize_(splitattn.create_model("resnest14"), seed=8)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = timm.create_model("splitattn_resnest14", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    loaded = timm.create_model("splitattn_resnest14", checkpoint_path=str(path))  # timm's own loader
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))


def _official_maps(model, x):
    stem = model.relu(model.bn1(model.conv1(x)))
    maps = [stem]
    y = model.maxpool(stem)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        y = stage(y)
        maps.append(y)
    return maps


@pytest.mark.parametrize("output_stride,official_kwargs", [(8, {"dilated": True}), (16, {"dilation": 2})])
def test_smp_deeplab_encoder_is_the_official_dilated_resnest(output_stride, official_kwargs):
    """SMP's DeepLabV3 / V3+ on tu-splitattn_resnest50: its encoder maps equal the official package's dilated
    network on the same weights (timm's own resnest50d dilates differently)."""
    theirs = randomize_(official.resnest50(**official_kwargs), seed=5)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = _official_maps(theirs, x)
    for cls in (smp.DeepLabV3, smp.DeepLabV3Plus):
        net = cls(encoder_name="tu-splitattn_resnest50", encoder_weights=None, encoder_output_stride=output_stride,
                  classes=5).eval()
        net.encoder.model.load_state_dict({k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")})
        with torch.no_grad():
            maps = net.encoder(x)[1:]  # SMP puts the input first
            assert net(x).shape == (2, 5, 96, 96)
        assert [m.shape for m in maps] == [e.shape for e in expected]
        rel = max(max_rel_diff(e, m) for e, m in zip(expected, maps))
        print(f"SMP {cls.__name__} OS{output_stride} vs official dilated: max rel diff {rel:.2e}")
        assert all(torch.equal(e, m) for e, m in zip(expected, maps))
    assert expected[-1].shape[-1] == 96 // output_stride


@pytest.mark.parametrize("cls", [smp.Unet, smp.FPN])
def test_smp_unet_and_fpn_build_on_our_encoder(cls):
    net = cls(encoder_name="tu-splitattn_resnest14", encoder_weights=None, classes=3).eval()
    assert net.encoder.out_channels == [3, 64, 256, 512, 1024, 2048]
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_has_an_entry_for_every_released_model():
    hub = _hubconf()
    entries = {name for name in dir(hub) if not name.startswith("_") and callable(getattr(hub, name))}
    assert set(splitattn.list_models()) | set(list_detectors()) | set(list_segmenters()) <= entries
    assert all(importlib.util.find_spec(dep) for dep in hub.dependencies)
    assert "ResNeSt-50" in hub.resnest50.__doc__


def test_torch_hub_load_from_this_repository(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.hub.load(str(ROOT), "resnest14", source="local", num_classes=10)
        detector = torch.hub.load(str(ROOT), "faster_rcnn_resnest50_fpn_d2", source="local", pretrained=False)
        segmenter = torch.hub.load(str(ROOT), "deeplabv3_resnest50_ade20k_encoding", source="local",
                                   pretrained=False)
    assert isinstance(model, ResNeSt) and model.fc.out_features == 10
    assert type(detector).__name__ == "DetectronRCNN" and segmenter.num_classes == 150
    source = randomize_(splitattn.create_model("resnest14"), seed=9)
    path = tmp_path / "resnest14-local.pth"
    torch.save(source.state_dict(), path)
    loaded = torch.hub.load(str(ROOT), "resnest14", source="local", pretrained=str(path))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded.eval()(x), source.eval()(x))
