"""The eval transform against the official `ECenterCrop` (scripts/torch/verify.py) on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from resnest.transforms import ECenterCrop
from torchvision import transforms

from splitattn import create_transform
from tests.conftest import foolbox_photos


def _photos():
    photos = foolbox_photos()
    assert len(photos) >= 20, "expected the 20 labelled ImageNet photos of the foolbox wheel"
    return photos[:4]


@pytest.mark.parametrize("name,crop", [("resnest50", 224), ("resnest101", 256), ("resnest200", 320),
                                       ("resnest269", 416)])
def test_matches_official_ecentercrop_bit_for_bit(name, crop):
    ours = create_transform(name)
    official = transforms.Compose([ECenterCrop(crop), transforms.ToTensor(),
                                   transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    for path in _photos():
        with Image.open(path) as img:
            img = img.convert("RGB")
            # the photos are square; a landscape and a portrait cut exercise the short-side rule
            for view in (img, img.crop((0, 40, 512, 437)), img.crop((33, 0, 350, 512))):
                a, b = ours(view), official(view)
                assert a.shape == (3, crop, crop)
                assert torch.equal(a, b), f"{path.name} {view.size}"


def test_crop_fraction_and_interpolation_follow_the_entry():
    t = create_transform("resnest14")
    crop = t.transforms[1]
    assert crop.size == 224 and crop.interpolation == "bilinear"
    assert create_transform("resnest50", crop=320).transforms[1].size == 320
    assert "crop_pct=0.929" in repr(create_transform("resnest269").transforms[1])


def test_grayscale_and_rgba_inputs_become_rgb():
    t = create_transform("resnest50")
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8))
    assert t(gray).shape == (3, 224, 224)
    assert t(gray.convert("RGBA")).shape == (3, 224, 224)
