"""timm's model interface on our networks, checked with timm's own code and against timm's ResNeSt on the same
weights: FeatureInfo, forward_intermediates, prune_intermediate_layers, forward_head, reset_classifier's pooling,
group_matcher, pretrained_cfg / resolve_data_config; and torch.fx / torchvision's create_feature_extractor on every
zoo model."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from timm.data import create_transform as timm_transform
from timm.data import resolve_data_config
from timm.models._features import FeatureInfo as TimmFeatureInfo
from timm.models._manipulate import group_parameters
from torchvision.models.feature_extraction import create_feature_extractor

import splitattn
from splitattn import create_model
from splitattn.data import open_image
from splitattn.data.sample_photos import sample_photos
from splitattn.layers import needs_two_samples
from tests.conftest import randomize_


@pytest.fixture(scope="module")
def pair():
    """timm's resnest50d and ours with the same random weights."""
    theirs = randomize_(timm.create_model("resnest50d"), seed=11)
    ours = create_model("resnest50").eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (1, 2, 3, 4), (2, 4), (3,)])
def test_feature_info_answers_as_timms(output_stride, out_indices):
    ours = create_model("resnest14", features_only=True, out_indices=out_indices, output_stride=output_stride)
    theirs = TimmFeatureInfo([dict(d) for d in ours.feature_info.get_dicts(idx=range(5))], out_indices)
    for method in ("channels", "reduction", "module_name"):
        assert getattr(ours.feature_info, method)() == getattr(theirs, method)(), method
        assert getattr(ours.feature_info, method)(2) == getattr(theirs, method)(2), method
    assert ours.feature_info.get_dicts() == theirs.get_dicts()
    strides = {8: [2, 4, 8, 8, 8], 16: [2, 4, 8, 16, 16], 32: [2, 4, 8, 16, 32]}[output_stride]
    assert ours.feature_info.reduction() == [strides[i] for i in out_indices]
    assert ours.feature_info.channels() == [[64, 256, 512, 1024, 2048][i] for i in out_indices]
    # still the list of dicts it was: iteration and indexing walk the returned maps
    maps = ours.eval()(torch.randn(1, 3, 64, 64))
    assert [d["num_chs"] for d in ours.feature_info] == [m.shape[1] for m in maps]
    assert [64 // d["reduction"] for d in ours.feature_info] == [m.shape[-1] for m in maps]
    assert len(ours.feature_info) == len(maps) and ours.feature_info[-1]["module"] == f"layer{max(out_indices)}"


@pytest.mark.parametrize("kwargs", [dict(), dict(indices=2), dict(indices=[0, -1]),
                                    dict(indices=[1, 3], stop_early=True), dict(indices=[2], intermediates_only=True)])
def test_forward_intermediates_equal_timms(pair, kwargs):
    ours, theirs = pair
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, timms = ours.forward_intermediates(x, **kwargs), theirs.forward_intermediates(x, **kwargs)
    if not kwargs.get("intermediates_only"):
        assert torch.equal(mine[0], timms[0])
        mine, timms = mine[1], timms[1]
    assert len(mine) == len(timms) and all(torch.equal(a, b) for a, b in zip(mine, timms))


def test_forward_head_and_classifier_pooling_equal_timms(pair):
    ours, theirs = pair
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = ours.forward_features(x)
        assert torch.equal(features, theirs.forward_features(x))
        assert torch.equal(ours.forward_head(features, pre_logits=True), theirs.forward_head(features, pre_logits=True))
        assert ours.num_features == ours.head_hidden_size == theirs.num_features == 2048
        for pool in ("avg", "max", "avgmax"):
            ours.reset_classifier(5, pool)
            theirs.reset_classifier(5, pool)
            ours.fc.load_state_dict(theirs.get_classifier().state_dict())
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
        ours.reset_classifier(0, "")
        assert ours(x).shape == features.shape  # no pooling, no head: the map
    with pytest.raises(ValueError, match="needs num_classes=0"):
        ours.reset_classifier(10, "")
    ours.reset_classifier(1000, "avg")


def test_prune_intermediate_layers_as_timm():
    ours, theirs = create_model("resnest50").eval(), timm.create_model("resnest50d").eval()
    assert ours.prune_intermediate_layers([2, 1]) == theirs.prune_intermediate_layers([2, 1])
    assert isinstance(ours.layer3, torch.nn.Identity) and isinstance(ours.fc, torch.nn.Identity)
    maps = ours.forward_intermediates(torch.randn(1, 3, 64, 64), indices=[1, 2], intermediates_only=True)
    assert [m.shape[1] for m in maps] == [256, 512]
    ours.set_grad_checkpointing()  # the pruned stages are no longer blocks to recompute
    ours.train()(torch.randn(2, 3, 64, 64)).sum().backward()


def test_a_new_head_joins_the_model_where_it_is():
    model = create_model("resnest14").double()
    model.reset_classifier(3, "avgmax")
    logits = model.eval()(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert model.fc.weight.dtype == logits.dtype == torch.float64 and logits.shape == (1, 3)


def test_group_matcher_groups_as_timms(pair):
    ours, theirs = pair
    for coarse in (False, True):
        mine = group_parameters(ours, ours.group_matcher(coarse))
        timms = group_parameters(theirs, theirs.group_matcher(coarse))
        assert mine == timms


@pytest.mark.parametrize("name", ["resnest50", "resnest101", "resnest200", "resnest269", "resnest14"])
def test_resolve_data_config_gives_the_official_eval_preprocessing(name):
    """timm's validate.py (use_test_size) on our pretrained_cfg: the same tensor as splitattn.create_transform."""
    with torch.device("meta"):
        model = create_model(name)
    entry = splitattn.get_entry(name)
    config = resolve_data_config({}, model=model, use_test_size=True)
    assert config["input_size"] == (3, entry.eval.crop, entry.eval.crop)
    assert config["crop_pct"] == pytest.approx(entry.eval.crop_pct) and config["interpolation"] == \
        entry.eval.interpolation
    assert resolve_data_config({}, model=model)["input_size"] == (3, entry.train_crop, entry.train_crop)
    for photo in sample_photos():
        image = open_image(photo.path)
        theirs, ours = timm_transform(**config)(image), splitattn.create_transform(name)(image)
        if entry.eval.crop == 224:  # these photos' short side is 256: both pipelines are one centre crop
            assert torch.equal(theirs, ours)
        else:  # timm resizes then crops, the official ECenterCrop crops then resizes: the same region, resampled
            gap = (theirs - ours).abs().mean().item()
            print(f"{name} {photo.path.name}: timm's transform vs the official, mean |Δ| {gap:.3f}")
            assert gap < 0.15
    cfg = model.pretrained_cfg
    assert cfg["hf_hub_id"] == (entry.checkpoint.hub_files[0].repo_id if entry.checkpoint.hub_files else None)
    assert cfg["first_conv"] in dict(model.named_modules()) and cfg["classifier"] in dict(model.named_modules())
    assert model.default_cfg == cfg and cfg["paper_ids"] == "arXiv:2004.08955"


@pytest.mark.parametrize("name", splitattn.list_models())
def test_every_zoo_model_traces_with_fx_and_create_feature_extractor(name):
    """torch.fx and torchvision's create_feature_extractor in train and eval mode (on the meta device: no compute),
    with the input check kept as a call in the graph."""
    with torch.device("meta"):
        model = create_model(name, drop_block_rate=0.1)
    for mode in (True, False):
        graph = torch.fx.symbolic_trace(model.train(mode)).graph
        assert any(getattr(node.target, "__name__", "") == "_checked_input" for node in graph.nodes)
    extractor = create_feature_extractor(model.train(), {"layer2": "c3", "layer4": "c5", "fc": "logits"})  # traces both
    for graph in (extractor.train().graph, extractor.eval().graph):
        assert any(getattr(node.target, "__name__", "") == "_checked_input" for node in graph.nodes)


@pytest.mark.parametrize("name", ["resnest14", "resnest50_fast_1s4x24d", "resnet50d"])
def test_traced_models_compute_what_the_eager_ones_do(name):
    """The traced graph equals the eager model in train mode (DropBlock, batch statistics) and eval mode, checks
    bad input, and the model stays scriptable (at a quarter width: the same code paths, less arithmetic)."""
    model = create_model(name, drop_block_rate=0.1, base_planes=16, stem_width=16)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for mode in (True, False):
        model.train(mode)
        extractor = create_feature_extractor(model, {"layer2": "c3", "layer4": "c5", "fc": "logits"})
        torch.manual_seed(5)
        out = extractor(x)
        torch.manual_seed(5)
        logits, (c3, c5) = model.forward_intermediates(x, indices=[2, 4])
        assert torch.equal(out["c3"], c3) and torch.equal(out["c5"], c5)
        torch.manual_seed(5)
        traced = torch.fx.symbolic_trace(model)(x)
        torch.manual_seed(5)
        assert torch.equal(traced, model(x))
        with pytest.raises(ValueError, match="expects 3"):
            extractor(torch.randn(2, 1, 64, 64))
        if mode and needs_two_samples(model):  # the training-batch rule too, as the traced mode decided it
            with pytest.raises(ValueError, match="batch size 1 in training mode"):
                extractor(torch.randn(1, 3, 64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model.eval())
    assert torch.equal(scripted(x), model(x))


def test_dcn_and_feature_backbones_trace_with_fx():
    model = create_model("resnest14", deform_stages=(2, 3, 4), deform_groups=2, features_only=True).eval()
    model.layer2[0].conv2_offset.weight.data.normal_(0, 0.01)  # non-zero offsets: the deformable op matters
    x = torch.randn(2, 3, 64, 64)
    traced = torch.fx.symbolic_trace(model)
    assert all(torch.equal(a, b) for a, b in zip(traced(x), model(x)))
