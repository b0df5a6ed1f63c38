"""Parity with the official package (`resnest==0.0.5`, the authors' torch code) on random weights.

Same state_dict both ways with strict=True, same logits in eval mode (randomised BN statistics),
including the dilated (segmentation) modes that timm gets wrong.
"""

from __future__ import annotations

import pytest
import resnest.torch as official
import torch

from splitattn import create_model
from tests.conftest import max_rel_diff, randomize_

# (name, input size): deep models at a small input to keep CI fast
VARIANTS = [
    ("resnest50", 224),
    ("resnest101", 128),
    ("resnest200", 96),
    ("resnest269", 64),
    *[(f"resnest50_fast_{s}", 160) for s in
      ("1s1x64d", "2s1x64d", "4s1x64d", "1s2x40d", "2s2x40d", "4s2x40d", "1s4x24d")],
]
TOL = 1e-5


def _logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name,size", VARIANTS)
def test_official_weights_load_both_ways_and_logits_match(name, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))

    theirs = randomize_(getattr(official, name)(), seed=0)
    ours = create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    rel = max_rel_diff(_logits(theirs, x), _logits(ours, x))
    print(f"parity official->ours {name}@{size}: {rel:.2e}")
    assert rel <= TOL, f"{name}: official -> ours max rel diff {rel:.2e}"

    ours2 = randomize_(create_model(name), seed=1)
    theirs2 = getattr(official, name)().eval()
    theirs2.load_state_dict(ours2.state_dict(), strict=True)
    rel2 = max_rel_diff(_logits(theirs2, x), _logits(ours2, x))
    print(f"parity ours->official {name}@{size}: {rel2:.2e}")
    assert rel2 <= TOL, f"{name}: ours -> official max rel diff {rel2:.2e}"
    assert list(ours.state_dict()) == [k for k in theirs.state_dict()], "key order differs from official"


@pytest.mark.parametrize("output_stride,official_kwargs", [(8, {"dilated": True}), (16, {"dilation": 2})])
@pytest.mark.parametrize("name", ["resnest50", "resnest50_fast_4s2x40d"])
def test_dilated_features_match_official(name, output_stride, official_kwargs):
    """Official dilation semantics: stride-1 3×3 avd blur in the first block of a dilated stage."""
    theirs = randomize_(getattr(official, name)(**official_kwargs), seed=2)
    ours = create_model(name, output_stride=output_stride).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    rel = max_rel_diff(_logits(theirs, x), _logits(ours, x))
    print(f"parity dilated {name} OS{output_stride}: {rel:.2e}")
    assert rel <= TOL, f"{name} OS{output_stride}: max rel diff {rel:.2e}"

    backbone = create_model(name, features_only=True, output_stride=output_stride).eval()
    backbone.load_state_dict(theirs.state_dict(), strict=False)
    with torch.no_grad():
        c5 = backbone(x)[-1]
        t = theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x))))
        t = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(t))))
    assert c5.shape == t.shape == (2, 2048, 128 // output_stride, 128 // output_stride)
    assert max_rel_diff(t, c5) <= TOL


def test_official_last_gamma_is_a_no_op_and_ours_is_not():
    """The official torch `last_gamma` is undone by its own init; the recipe needs it to work."""
    theirs = official.resnest50(last_gamma=True)
    assert all(b.bn3.weight.detach().abs().sum().item() > 0 for layer in (theirs.layer1, theirs.layer4) for b in layer)
    ours = create_model("resnest50")
    blocks = [b for layer in (ours.layer1, ours.layer2, ours.layer3, ours.layer4) for b in layer]
    assert all(b.bn3.weight.detach().abs().sum().item() == 0 for b in blocks)
    other_bns = [m for n, m in ours.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and not n.endswith("bn3")]
    assert all(bool((m.weight.detach() == 1).all()) for m in other_bns)
    plain = create_model("resnest50", zero_init_last=False)
    assert all(b.bn3.weight.detach().abs().sum().item() > 0 for b in plain.layer1)
