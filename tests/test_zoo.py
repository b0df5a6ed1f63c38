"""The zoo: every variant the issue lists, sizes against the published counts, entry metadata."""

from __future__ import annotations

import re

import pytest

import splitattn
from splitattn.models.zoo import get_entry

REQUIRED = [
    "resnest14", "resnest26", "resnest50", "resnest101", "resnest200", "resnest269",
    *[f"resnest50_fast_{s}" for s in ("1s1x64d", "2s1x64d", "4s1x64d", "1s2x40d", "2s2x40d", "4s2x40d", "1s4x24d")],
    "resnet50d", "resnext50d_32x4d",
]

# Published sizes (paper-facts.md §4): the exact count of the official architecture.
PAPER_PARAMS_M = {
    "resnest50": 27.48, "resnest101": 48.28, "resnest200": 70.20, "resnest269": 110.93,
    "resnest50_fast_1s1x64d": 26.22, "resnest50_fast_2s1x64d": 27.48, "resnest50_fast_4s1x64d": 31.91,
    "resnest50_fast_1s2x40d": 25.95, "resnest50_fast_2s2x40d": 26.94, "resnest50_fast_4s2x40d": 30.42,
    "resnest50_fast_1s4x24d": 25.68, "resnet50d": 25.58,
}


def test_every_listed_variant_is_registered():
    assert set(REQUIRED) <= set(splitattn.list_models())
    assert set(splitattn.list_models(tag="fast")) == {n for n in REQUIRED if "_fast_" in n}
    assert sorted(splitattn.list_models("resnest2*")) == ["resnest200", "resnest26", "resnest269"]


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_params_equal_the_paper_table_and_gmacs_within_one_percent(name):
    entry = get_entry(name)
    ref = entry.reference("exact count")
    assert ref.params_m == PAPER_PARAMS_M[name]  # the zoo quotes the table it claims to
    got = splitattn.measure(name, crop=ref.crop)
    assert round(got.params_m, 2) == PAPER_PARAMS_M[name]
    assert got.gmacs == pytest.approx(ref.gmacs, rel=0.01)


def test_resnest101_gmacs_at_224_match_the_paper_too():
    assert splitattn.measure("resnest101", crop=224).gmacs == pytest.approx(10.20, rel=0.01)
    assert splitattn.measure("resnest200", crop=224).gmacs == pytest.approx(17.41, rel=0.01)
    assert splitattn.measure("resnest269", crop=224).gmacs == pytest.approx(22.43, rel=0.01)


@pytest.mark.parametrize("name", REQUIRED)
def test_entry_metadata_is_complete_and_consistent(name):
    entry = get_entry(name)
    assert entry.eval.crop in (224, 256, 320, 416) and entry.train_crop <= entry.eval.crop
    assert entry.eval.crop_pct == pytest.approx(entry.eval.crop / (entry.eval.crop + 32))
    assert entry.eval.interpolation in ("bicubic", "bilinear")
    if entry.checkpoint is not None:
        ckpt = entry.checkpoint
        assert re.fullmatch(r"[0-9a-f]{8}", ckpt.sha256_prefix)
        assert ckpt.filename.endswith(f"-{ckpt.sha256_prefix}.pth")
        assert ckpt.urls and all(u.startswith("https://") and u.endswith(ckpt.filename) for u in ckpt.urls)
    for ref in entry.references:
        assert ref.source, f"{name}: reference {ref.label} has no source"


def test_official_eval_crops_and_checkpoint_hashes():
    crops = {n: get_entry(n).eval.crop for n in ("resnest50", "resnest101", "resnest200", "resnest269")}
    assert crops == {"resnest50": 224, "resnest101": 256, "resnest200": 320, "resnest269": 416}
    assert [round(get_entry(n).eval.crop_pct, 3) for n in crops] == [0.875, 0.889, 0.909, 0.929]
    assert get_entry("resnest50").checkpoint.filename == "resnest50-528c19ca.pth"
    assert get_entry("resnest50_fast_1s4x24d").checkpoint.sha256_prefix == "d4a4f76f"
    assert get_entry("resnest269").arch["drop_rate"] == 0.2 and get_entry("resnest50").arch["drop_rate"] == 0.0


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnest5'.*Did you mean 'resnest50'"):
        splitattn.create_model("resnest5")
    with pytest.raises(ValueError, match="splitattn list"):
        splitattn.create_model("efficientnet_b0")


def test_unknown_override_suggests_the_argument():
    with pytest.raises(TypeError, match=r"'num_class' \(did you mean 'num_classes'\?\)"):
        splitattn.create_model("resnest14", num_class=10)


def test_model_info_is_json_ready():
    info = splitattn.model_info("resnest50")
    assert info["measured"]["params_m"] == pytest.approx(27.483, abs=1e-3)
    assert info["eval"]["crop_pct"] == 0.875
    assert info["checkpoint"]["sha256_prefix"] == "528c19ca"
