"""Colour-guided refinement (segmentation/refine.py) against a dense re-computation and on hand-made images."""

import pytest
import torch
import torch.nn.functional as F

from splitattn.config import ConfigError
from splitattn.segmentation.config import load_segment_config
from splitattn.segmentation.refine import BilateralRefine, bilateral_refine


def dense_refine_step(probs, image, window, sigma_xy, sigma_rgb):
    """One step written out as a full (pixel, neighbour) weight matrix: the definition, not the code under test."""
    _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten().double(), xs.flatten().double()
    colours = image.flatten(1).T.double()
    dy, dx = ys[:, None] - ys[None], xs[:, None] - xs[None]
    in_window = (dy.abs() <= window // 2) & (dx.abs() <= window // 2)
    weight = torch.exp(-(dy**2 + dx**2) / (2 * sigma_xy**2) - torch.cdist(colours, colours) ** 2 / (2 * sigma_rgb**2))
    weight = weight * in_window
    weight = weight / weight.sum(1, keepdim=True)
    return (probs.flatten(1).double() @ weight.T).view_as(probs)


def test_matches_the_dense_definition():
    torch.manual_seed(0)
    probs = torch.randn(4, 9, 11).softmax(0)
    image = torch.rand(3, 9, 11)
    expected = dense_refine_step(dense_refine_step(probs, image, 5, 1.5, 0.2), image, 5, 1.5, 0.2)
    got = bilateral_refine(probs, image, steps=2, window=5, sigma_xy=1.5, sigma_rgb=0.2)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert torch.allclose(got.sum(0), torch.ones(9, 11), atol=1e-5)  # still probabilities


def test_colour_regions_take_their_majority_and_keep_their_border():
    # left half red, right half blue; the network's map is noisy inside each half
    image = torch.zeros(3, 16, 16)
    image[0, :, :8] = 0.8
    image[2, :, 8:] = 0.8
    torch.manual_seed(1)
    truth = torch.zeros(16, 16, dtype=torch.long)
    truth[:, 8:] = 1
    noisy = truth.clone()
    flips = torch.rand(16, 16) < 0.25  # a quarter of the pixels voted for the other class
    noisy[flips] = 1 - noisy[flips]
    probs = F.one_hot(noisy, 2).permute(2, 0, 1).float() * 0.6 + 0.2
    assert (probs.argmax(0) != truth).sum() > 40
    refined = bilateral_refine(probs, image, steps=4, window=7, sigma_xy=3.0, sigma_rgb=0.05)
    assert torch.equal(refined.argmax(0), truth)
    # colour-blind smoothing with the same window blurs across the border instead
    blind = bilateral_refine(probs, image, steps=4, window=7, sigma_xy=3.0, sigma_rgb=1e3)
    border_truth = truth[:, 7:9].flatten()
    confidence = refined[:, :, 7:9].flatten(1).gather(0, border_truth[None]).mean()
    blind_confidence = blind[:, :, 7:9].flatten(1).gather(0, border_truth[None]).mean()
    print(f"border confidence: colour-guided {confidence:.3f}, colour-blind {blind_confidence:.3f}")
    assert confidence > 0.6 and blind_confidence < confidence - 0.1


def test_off_and_one_pixel_window_change_nothing():
    probs = torch.randn(3, 5, 6).softmax(0)
    image = torch.rand(3, 5, 6)
    assert bilateral_refine(probs, image, steps=0) is probs
    assert torch.allclose(bilateral_refine(probs, image, steps=3, window=1), probs)
    assert BilateralRefine()(probs, image) is probs  # the default is off: the paper's protocol


@pytest.mark.parametrize("kwargs, message", [({"steps": -1}, "steps"), ({"window": 4}, "odd"),
                                             ({"sigma_rgb": 0.0}, "sigma")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BilateralRefine(**kwargs)
    (key, value), = kwargs.items()
    with pytest.raises(ConfigError, match="eval.refine_"):
        load_segment_config("configs/segmentation/scenes_deeplabv3_cpu.yaml", [f"eval.refine_{key}={value}"])


def test_size_mismatch_is_refused():
    with pytest.raises(ValueError, match="one size"):
        bilateral_refine(torch.rand(2, 4, 4), torch.rand(3, 4, 5))
