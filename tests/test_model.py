"""Network behaviour: heads, feature pyramid, output strides, norm layers, training, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import splitattn
from splitattn import create_model


@pytest.mark.parametrize("name", splitattn.list_models())
def test_train_mode_forward_backward(name):
    model = create_model(name, num_classes=7).train()
    x = torch.randn(2, 3, 64, 64)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 5]))
    loss.backward()
    assert torch.isfinite(loss)
    params = dict(model.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    assert params["fc.weight"].grad.abs().sum() > 0 and params["conv1.0.weight"].grad.abs().sum() > 0


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_pyramid_channels_strides_and_metadata(output_stride):
    model = create_model("resnest50_fast_2s2x40d", features_only=True, output_stride=output_stride,
                         out_indices=(0, 1, 2, 3, 4)).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 96))
    expected_reductions = [2, 4, 8, min(16, output_stride), output_stride]
    assert [f["reduction"] for f in model.feature_info] == expected_reductions
    assert [f["num_chs"] for f in model.feature_info] == [64, 256, 512, 1024, 2048]
    for feat, info in zip(feats, model.feature_info):
        assert feat.shape[1:] == (info["num_chs"], 128 // info["reduction"], 96 // info["reduction"])
    assert not hasattr(model.fc, "weight")


def test_partial_out_indices_skip_later_stages():
    model = create_model("resnest14", features_only=True, out_indices=(1, 2)).eval()
    calls = []
    model.layer3.register_forward_hook(lambda *a: calls.append("layer3"))
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256, 512] and calls == []
    with pytest.raises(ValueError, match="out_indices"):
        create_model("resnest14", features_only=True, out_indices=(1, 5))


def test_dilated_stages_use_the_official_stride_1_avd_blur():
    model = create_model("resnest50", output_stride=8)
    first3, first4 = model.layer3[0], model.layer4[0]
    for block, dilation in ((first3, 1), (first4, 2)):
        assert isinstance(block.avd_post, nn.AvgPool2d) and block.avd_post.stride == 1
        assert block.conv2.conv.dilation == (dilation, dilation)
        assert isinstance(block.downsample[0], nn.Identity)
    assert model.layer3[1].conv2.conv.dilation == (2, 2) and model.layer4[1].conv2.conv.dilation == (4, 4)
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        create_model("resnest50", output_stride=4)


def test_heads_reset_and_pre_logits():
    model = create_model("resnest14", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 2048)
        assert model.forward_features(x).shape == (2, 2048, 2, 2)
        model.reset_classifier(10)
        assert model(x).shape == (2, 10) and model.num_classes == 10
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 2048)
    assert isinstance(create_model("resnest200").drop, nn.Dropout)
    assert "fc.weight" not in create_model("resnest14", num_classes=0).state_dict()


def test_in_chans():
    model = create_model("resnest14", in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("norm", ["bn", "syncbn", "frozenbn", "gn"])
def test_norm_layer_choices_train(norm):
    model = create_model("resnest50_fast_2s2x40d", num_classes=3, norm_layer=norm).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    kinds = {type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}
    expected = {"bn": "BatchNorm2d", "syncbn": "SyncBatchNorm", "frozenbn": "FrozenBatchNorm2d", "gn": "GroupNorm"}
    assert kinds == {expected[norm]}
    if norm == "gn":  # 80-channel groups of the 2x40d model get gcd(32, 80) = 16 groups
        assert model.layer1[0].bn1.num_groups == 16
        # the pooled attention vector is normalised as one group: GN(32) there would output β alone
        attention = model.layer1[0].conv2
        assert attention.bn1.num_groups == 1
        with torch.no_grad():
            a = attention.bn1(attention.fc1(torch.randn(2, 80, 1, 1)))
        assert a.std() > 0.5


@pytest.mark.parametrize("norm", ["frozenbn", "gn"])
def test_batch_of_one_trains_without_batch_statistics(norm):
    model = create_model("resnest14", num_classes=3, norm_layer=norm).train()
    model(torch.randn(1, 3, 64, 64)).sum().backward()


def test_frozen_bn_loads_a_batchnorm_checkpoint():
    source = create_model("resnest14")
    frozen = create_model("resnest14", norm_layer="frozenbn").eval()
    splitattn.load_weights(frozen, source.state_dict())
    source.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), source(x))


# ------------------------------------------------------------------ bad input
def test_wrong_channel_count_names_the_fix():
    model = create_model("resnest14").eval()
    with pytest.raises(ValueError, match=r"input has 1 channels but the model expects 3.*in_chans=1"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*unsqueeze"):
        model(torch.randn(3, 64, 64))


def test_too_small_input_for_the_output_stride():
    with pytest.raises(ValueError, match=r"input 16×16 is smaller than the output stride 32"):
        create_model("resnest14").eval()(torch.randn(1, 3, 16, 16))
    features = create_model("resnest14", features_only=True, output_stride=8).eval()
    with torch.no_grad():
        assert features(torch.randn(1, 3, 16, 16))[-1].shape[-1] == 2  # OS 8 accepts it
    with pytest.raises(ValueError, match="smaller than the output stride 8"):
        features(torch.randn(1, 3, 7, 16))


def test_batch_size_one_in_training_explains_itself():
    model = create_model("resnest14").train()
    explained = r"batch size 1 in training mode.*one value per channel.*model.eval\(\)"
    with pytest.raises(ValueError, match=explained) as err:
        model(torch.randn(1, 3, 64, 64))
    # the options of every factory, each under its own argument name (create_detector takes norm=, not norm_layer=)
    assert "norm_layer='frozenbn' or 'gn' (create_model)" in str(err.value)
    assert "norm='frozenbn' or 'gn' (create_detector, create_segmenter)" in str(err.value)
    synced = create_model("resnest14", norm_layer="syncbn").train()
    with pytest.raises(ValueError) as err:  # syncbn already: say when it synchronises, do not suggest it again
        synced(torch.randn(1, 3, 64, 64))
    assert "SyncBatchNorm synchronises only then" in str(err.value) and "norm_layer=" not in str(err.value)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown norm_layer 'batchnorm'"):
        create_model("resnest14", norm_layer="batchnorm")
    with pytest.raises(ValueError, match="drop_prob"):
        create_model("resnest14", drop_block_rate=1.0)
    with pytest.raises(ValueError, match="in_chans"):
        create_model("resnest14", in_chans=0)


def test_zero_init_last_spares_frozen_norms():
    frozen = create_model("resnest14", norm_layer="frozenbn")
    assert bool((frozen.layer1[0].bn3.weight == 1).all())
    gn = create_model("resnest14", norm_layer="gn")
    assert gn.layer1[0].bn3.weight.detach().abs().sum().item() == 0
