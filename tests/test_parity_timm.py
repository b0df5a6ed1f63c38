"""Parity with timm on random weights: same keys, same parameter count, same logits.

timm's resnest14d/26d carry the GluonCV-trained weights; resnet50d / resnext50d_32x4d check that
our radix-0 baselines are the standard ResNet-D / ResNeXt-D networks. timm's dilated mode differs
from the official one (peers.md §1.3), so dilation parity is checked against the official code only.
"""

from __future__ import annotations

import pytest
import timm
import torch

from splitattn import create_model
from splitattn.models.info import count_params
from tests.conftest import max_rel_diff, randomize_

PAIRS = [
    ("resnest14", "resnest14d"),
    ("resnest26", "resnest26d"),
    ("resnest50", "resnest50d"),
    ("resnest50_fast_4s2x40d", "resnest50d_4s2x40d"),
    ("resnest50_fast_1s4x24d", "resnest50d_1s4x24d"),
    ("resnet50d", "resnet50d"),
    ("resnext50d_32x4d", "resnext50d_32x4d"),
]


@pytest.mark.parametrize("ours_name,timm_name", PAIRS)
def test_timm_weights_load_and_logits_match(ours_name, timm_name):
    theirs = randomize_(timm.create_model(timm_name, pretrained=False), seed=4)
    ours = create_model(ours_name).eval()
    assert count_params(ours) == count_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        rel = max_rel_diff(theirs(x), ours(x))
    print(f"parity timm {timm_name}: {rel:.2e}")
    assert rel <= 1e-5, f"{ours_name} vs timm {timm_name}: max rel diff {rel:.2e}"


def test_timm_alias_names_resolve_to_the_same_architecture():
    for ours_name, timm_name in PAIRS[:5]:
        assert create_model(timm_name).zoo_entry.name == ours_name


def test_features_match_timm_features_only():
    theirs = randomize_(timm.create_model("resnest50d", features_only=True, out_indices=(1, 2, 3, 4)), seed=6)
    ours = create_model("resnest50", features_only=True).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert [f["num_chs"] for f in ours.feature_info] == theirs.feature_info.channels()
    assert [f["reduction"] for f in ours.feature_info] == theirs.feature_info.reduction()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(theirs(x), ours(x)):
            assert a.shape == b.shape and max_rel_diff(a, b) <= 1e-5
