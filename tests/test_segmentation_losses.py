"""Lovász-softmax: a hand-computed case, the Jaccard loss it extends, ignored pixels, the combined loss."""

import pytest
import torch
import torch.nn.functional as F

from splitattn.segmentation import ConfusionMatrix, lovasz_softmax, segmentation_loss


def test_lovasz_softmax_hand_computed():
    # three pixels, two classes: p(class 1) = 0.9, 0.4, 0.2 and labels 1, 1, 0.
    # class 1: errors 0.1, 0.6, 0.2 -> sorted 0.6 (fg), 0.2 (bg), 0.1 (fg); Jaccard along the order 1/2, 2/3, 1
    #          -> increments 1/2, 1/6, 1/3 -> 0.6/2 + 0.2/6 + 0.1/3 = 0.36667
    # class 0: errors 0.1, 0.6, 0.2 -> sorted 0.6 (bg), 0.2 (fg), 0.1 (bg); Jaccard 1/2, 1, 1 -> 0.6/2 + 0.2/2 = 0.4
    p1 = torch.tensor([0.9, 0.4, 0.2])
    logits = torch.stack([torch.zeros(3), torch.log(p1 / (1 - p1))]).view(1, 2, 1, 3)
    target = torch.tensor([[[1, 1, 0]]])
    assert float(lovasz_softmax(logits, target)) == pytest.approx((0.36667 + 0.4) / 2, abs=1e-4)


def test_lovasz_softmax_of_a_hard_prediction_is_one_minus_miou():
    """On 0/1 probabilities the Lovász extension is the Jaccard loss itself: 1 − IoU per class."""
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16))
    predicted = torch.where(torch.rand(2, 16, 16) < 0.3, torch.randint(0, 4, (2, 16, 16)), target)
    logits = F.one_hot(predicted, 4).permute(0, 3, 1, 2).double() * 100  # softmax saturates to 0/1
    matrix = ConfusionMatrix(4)
    matrix.update(predicted, target)
    assert float(lovasz_softmax(logits, target)) == pytest.approx(1 - matrix.mean_iou(), abs=1e-6)
    assert float(lovasz_softmax(logits, predicted)) == pytest.approx(0.0, abs=1e-6)


def test_lovasz_softmax_ignores_ignored_pixels_and_absent_classes():
    torch.manual_seed(1)
    logits = torch.randn(1, 5, 6, 6, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 6, 6))  # classes 3 and 4 absent: not averaged in
    reference = lovasz_softmax(logits, target)
    extended_logits = torch.cat([logits, torch.randn(1, 5, 6, 2, dtype=torch.float64) * 10], -1)
    extended_target = torch.cat([target, torch.full((1, 6, 2), 255)], -1)
    assert float(lovasz_softmax(extended_logits, extended_target)) == pytest.approx(float(reference), abs=1e-12)
    assert float(lovasz_softmax(logits, torch.full((1, 6, 6), 255))) == 0.0


def test_segmentation_loss_adds_the_weighted_lovasz_term():
    torch.manual_seed(2)
    outputs = {"out": torch.randn(2, 3, 8, 8, requires_grad=True), "aux": torch.randn(2, 3, 8, 8)}
    target = torch.randint(0, 3, (2, 8, 8))
    with torch.no_grad():
        plain = segmentation_loss(outputs, target)
        expected = F.cross_entropy(outputs["out"], target) + 0.2 * F.cross_entropy(outputs["aux"], target)
        lovasz = lovasz_softmax(outputs["out"], target)
    assert float(plain) == pytest.approx(float(expected), rel=1e-6)
    combined = segmentation_loss(outputs, target, lovasz_weight=0.5)
    assert float(combined.detach() - plain) == pytest.approx(0.5 * float(lovasz), rel=1e-5)
    combined.backward()  # differentiable through the sort
    assert torch.isfinite(outputs["out"].grad).all() and outputs["out"].grad.abs().sum() > 0


def test_lovasz_stride_reads_every_nth_pixel():
    torch.manual_seed(3)
    outputs = {"out": torch.randn(2, 3, 9, 9)}
    target = torch.randint(0, 3, (2, 9, 9))
    strided = segmentation_loss(outputs, target, aux_weight=0, lovasz_weight=1.0, lovasz_stride=2)
    expected = F.cross_entropy(outputs["out"], target) + lovasz_softmax(outputs["out"][..., ::2, ::2],
                                                                        target[..., ::2, ::2])
    assert float(strided) == pytest.approx(float(expected), rel=1e-6)
