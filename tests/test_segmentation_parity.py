"""Segmentation parity: our segmenters, loaded with the oracle's own weights through our converters, give the
oracle's outputs on a real photo.

- PyTorch-Encoding 1.2.1 (the paper's segmentation code): DeepLabV3 ResNeSt-50 and -101 and FCN ResNeSt-50 (ADE20K
  heads), main and auxiliary logits, single scale; and Encoding's own multi-scale + flip evaluation
  (``MultiEvalModule``: six scales, flip, sliding windows) against ``predict_logits(combine="encoding")``.
- mmsegmentation 1.2.2: its ResNeSt-101-D8 DeepLabV3, PSPNet, FCN and DeepLabV3+ (the configs of its released
  checkpoints) against ``flavour="mmseg"``; and a control showing mmseg's dilated ResNeSt is not the official one.

Weights are random with BN statistics off identity (``tests.oracles.detectron2_models.randomize``), so nothing
agrees by accident; the bound is 1e-5 relative to the largest logit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitattn.segmentation import create_segmenter, predict_logits
from splitattn.segmentation.convert import from_encoding, from_mmseg
from tests.oracles.encoding_models import build_encoding, encoding_multi_eval
from tests.oracles.mmseg_models import build_mmseg, mmseg_logits
from tests.voc_photo import load_voc_photo

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # Encoding's test.py for ADE20K / Pascal Context


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """The real VOC photo (375 × 500), [0, 1] RGB, cut to 240 × 320 to keep the CPU time down."""
    rgb = np.asarray(load_voc_photo()["rgb"], np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[:, 60:300, 80:400].contiguous()


def _relative(reference: torch.Tensor, ours: torch.Tensor) -> float:
    return float((reference - ours).abs().max() / reference.abs().max())


@pytest.mark.parametrize("kind, backbone", [("deeplabv3", "resnest50"), ("fcn", "resnest50"),
                                            ("deeplabv3", "resnest101")])
def test_encoding_single_scale_logits(photo, kind, backbone):
    oracle = build_encoding(kind, backbone, 150)
    state, _ = from_encoding(oracle.state_dict())
    ours = create_segmenter(kind, backbone, 150, progress=False).eval()
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        out, aux = oracle(((photo - MEAN) / STD)[None])  # Encoding's datasets normalise; our model does it itself
        got = ours(photo[None])
    assert out.shape == got["out"].shape == (1, 150, *photo.shape[1:])
    assert _relative(out, got["out"]) <= 1e-5
    assert _relative(aux, got["aux"]) <= 1e-5
    assert out.argmax(1).unique().numel() > 5  # a varied prediction, not one class everywhere
    assert (out.argmax(1) == got["out"].argmax(1)).float().mean() >= 0.999


def test_encoding_multi_scale_flip_evaluation(photo):
    """Encoding's MultiEvalModule (its base / crop sizes shrunk to 200 / 160 so the six scales fit the CPU: scale
    1.75 gives a 350-px long side, evaluated in 160-px windows with stride 106) against ours."""
    oracle = build_encoding("deeplabv3", "resnest50", 150)
    oracle.base_size, oracle.crop_size = 200, 160
    ours = create_segmenter("deeplabv3", "resnest50", 150, progress=False).eval()
    ours.load_state_dict(from_encoding(oracle.state_dict())[0], strict=True)
    reference = encoding_multi_eval(oracle, ((photo - MEAN) / STD)[None], SCALES, flip=True)[0]
    got = predict_logits(ours, photo, 150, scales=SCALES, flip=True, crop_size=160, base_size=200,
                         resize_side="long", combine="encoding")
    assert got.shape == reference.shape == (150, *photo.shape[1:])
    assert _relative(reference, got) <= 1e-5
    assert float((reference.log() - got.log()).abs().max()) <= 1e-5  # also where the scores are small
    assert (reference.argmax(0) == got.argmax(0)).float().mean() >= 0.999


@pytest.mark.parametrize("kind", ["deeplabv3", "pspnet", "fcn", "deeplabv3plus"])
def test_mmseg_logits(photo, kind):
    oracle, cfg = build_mmseg(kind, "ade20k")
    assert cfg.model.backbone.depth == 101
    state, _ = from_mmseg({"meta": {}, "state_dict": oracle.state_dict()})
    ours = create_segmenter(kind, "resnest101", 150, flavour="mmseg", progress=False).eval()
    ours.load_state_dict(state, strict=True)
    reference = mmseg_logits(oracle, photo)
    with torch.no_grad():
        got = ours(photo[None])
    assert got["out"].shape == reference.shape == (1, 150, *photo.shape[1:])
    assert _relative(reference, got["out"]) <= 1e-5
    # the logits vary over the photo 1000x more than the tolerance (DeepLabV3+'s random decoder varies least)
    assert float((reference.amax((2, 3)) - reference.amin((2, 3))).max() / reference.abs().max()) > 1e-2
    assert (reference.argmax(1) == got["out"].argmax(1)).float().mean() >= 0.999
    if kind == "deeplabv3":  # the auxiliary head too (mmseg's FCNHead on C4, 256 channels, one conv)
        features = oracle.extract_feat(oracle.data_preprocessor(
            {"inputs": [(photo * 255).flip(0)]}, False)["inputs"])
        with torch.no_grad():
            aux = torch.nn.functional.interpolate(oracle.auxiliary_head(features), size=photo.shape[1:],
                                                  mode="bilinear", align_corners=False)
        assert _relative(aux, got["aux"]) <= 1e-5


def test_mmseg_backbone_is_not_the_official_dilated_resnest(photo):
    """The control: with the official stride-1 avd pool in the first dilated blocks, mmseg's weights give other
    features, so ``avd_dilated=False`` (the mmseg flavour) is what makes the logits above agree."""
    oracle, _ = build_mmseg("fcn", "ade20k")
    state, _ = from_mmseg(oracle.state_dict())
    official = create_segmenter("fcn", "resnest101", 150, flavour="mmseg", avd_dilated=True, progress=False).eval()
    official.load_state_dict(state, strict=True)
    with torch.no_grad():
        got = official(photo[None])["out"]
    assert _relative(mmseg_logits(oracle, photo), got) > 1e-2
