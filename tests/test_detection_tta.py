"""Test-time augmentation against detectron2's ``GeneralizedRCNNWithTTA`` on the same weights.

detectron2 + the official ResNeSt plug-in build each detector (random weights with spread, SyncBN → BN), our
detector loads the converted state_dict, and both run multi-scale + flip TTA on real photos. The settings are
cut for the CPU on both sides alike (two sizes, 300 proposals, 50 detections per image; score threshold 0 so
every detection is compared); the TTA steps do not depend on them. Compared: the augmented images and their
box transforms (exactly), and the final detections and masks, paired by :mod:`tests.oracles.matching`.
"""

from __future__ import annotations

import pytest
import torch

from splitattn.detection import create_detector
from splitattn.detection.convert import from_detectron2
from splitattn.detection.rcnn.tta import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZES, DetectionTTA
from tests.oracles.detectron2_models import build_oracle, oracle_input, require_detectron2
from tests.oracles.matching import match
from tests.voc_photo import photo_tensor

SIZES, MAX_SIZE = (320, 400), 1000  # detectron2's defaults (400..1200, 4000) cost ~20x the CPU time
TEST_SIZE, PROPOSALS, DETECTIONS = 480, 300, 50


@pytest.fixture(scope="module")
def pairs():
    """kind → (detectron2's TTA around the oracle, our detector with the converted weights), built once."""
    require_detectron2()
    from detectron2.modeling import GeneralizedRCNNWithTTA

    built = {}

    def get(kind: str):
        if kind not in built:
            oracle, cfg = build_oracle(kind, **{
                "TEST.AUG.MIN_SIZES": str(SIZES), "TEST.AUG.MAX_SIZE": MAX_SIZE, "TEST.AUG.FLIP": True,
                "INPUT.MIN_SIZE_TEST": TEST_SIZE, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
                "MODEL.RPN.POST_NMS_TOPK_TEST": PROPOSALS, "TEST.DETECTIONS_PER_IMAGE": DETECTIONS})
            assert tuple(cfg.TEST.AUG.MIN_SIZES) == SIZES and cfg.TEST.AUG.MAX_SIZE == MAX_SIZE
            ours = create_detector(kind, "resnest50", 81, norm="bn", flavour="detectron2", score_thresh=0.0,
                                   test_size=TEST_SIZE, min_size=TEST_SIZE, rpn_post_nms_test=PROPOSALS,
                                   detections_per_img=DETECTIONS, progress=False)
            state, _ = from_detectron2(oracle.state_dict())
            ours.load_state_dict(state, strict=True)
            built[kind] = GeneralizedRCNNWithTTA(cfg, oracle), cfg, ours.eval()
        return built[kind]

    return get


def _d2_input(image: torch.Tensor, cfg, pre_resize: bool) -> dict:
    """What ``GeneralizedRCNNWithTTA`` is given: the photo itself, or (``train_net.py``) the test loader's
    image already resized to ``INPUT.MIN_SIZE_TEST``, with the photo's height and width."""
    if pre_resize:
        return oracle_input(image, cfg)
    return {"image": image * 255.0, "height": image.shape[1], "width": image.shape[2]}


@pytest.mark.parametrize("pre_resize", [False, True])
def test_augmented_inputs_and_transforms_are_detectron2s(pairs, pre_resize):
    theirs, cfg, ours = pairs("faster_rcnn")
    tta = DetectionTTA(ours, SIZES, MAX_SIZE, pre_resize=pre_resize)
    g = torch.Generator().manual_seed(0)
    for photo in ("voc", "chelsea"):
        image = photo_tensor(photo)
        h, w = image.shape[1:]
        inputs, tfms = theirs._get_augmented_inputs(_d2_input(image, cfg, pre_resize))
        augmented = tta.augment(image)
        assert len(augmented) == len(inputs) == 2 * len(SIZES)
        xy = torch.rand(20, 2, 2, generator=g) * torch.tensor([w, h])
        boxes = torch.cat([xy.min(dim=1).values, xy.max(dim=1).values], dim=1)  # XYXY in the photo
        for a, d2_input, tfm in zip(augmented, inputs, tfms, strict=True):
            assert torch.equal(a.image, d2_input["image"]), f"{photo}: augmented image {a.hw} differs"
            forward = a.apply_box(boxes)
            assert torch.equal(forward, torch.from_numpy(tfm.apply_box(boxes.numpy())))
            assert torch.equal(a.inverse_box(forward), torch.from_numpy(tfm.inverse().apply_box(forward.numpy())))


def _compare(kind: str, theirs_tta, ours_tta, image: torch.Tensor, d2_input: dict):
    with torch.no_grad():
        theirs = theirs_tta([d2_input])[0]["instances"]
        mine = ours_tta([image])[0]
    t = {"boxes": theirs.pred_boxes.tensor, "scores": theirs.scores, "labels": theirs.pred_classes + 1}
    o = {k: mine[k] for k in ("boxes", "scores", "labels")}
    if kind.endswith("mask_rcnn"):
        assert mine["masks"].shape[1:] == (1, *image.shape[1:])
        t["masks"], o["masks"] = theirs.pred_masks, mine["masks"][:, 0] >= 0.5
    report = match(o, t)
    assert len(mine["scores"]) == len(theirs) > 0
    return report


@pytest.mark.parametrize("kind", ["faster_rcnn", "mask_rcnn", "cascade_mask_rcnn"])
def test_tta_matches_detectron2(pairs, kind):
    theirs, cfg, ours = pairs(kind)
    image = photo_tensor("voc")
    report = _compare(kind, theirs, DetectionTTA(ours, SIZES, MAX_SIZE), image, _d2_input(image, cfg, False))
    print(f"{kind} TTA on voc: {report.line()}")
    assert report.rate >= 0.99 and report.failures == 0, f"{kind} TTA: {report.line()}"


def test_tta_pre_resized_like_train_net_matches_detectron2(pairs):
    """The official evaluation path: the test loader's resize, then TTA's resizes of that image."""
    theirs, cfg, ours = pairs("faster_rcnn")
    image = photo_tensor("chelsea")
    report = _compare("faster_rcnn", theirs, DetectionTTA(ours, SIZES, MAX_SIZE, pre_resize=True), image,
                      _d2_input(image, cfg, True))
    print(f"faster_rcnn TTA, pre-resized, on chelsea: {report.line()}")
    assert report.rate >= 0.99 and report.failures == 0, report.line()


def test_tta_arguments(pairs):
    _, _, ours = pairs("faster_rcnn")
    tta = DetectionTTA(ours)
    assert tta.min_sizes == DEFAULT_MIN_SIZES == (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
    assert (tta.max_size, tta.flip, tta.batch_size, tta.pre_resize) == (DEFAULT_MAX_SIZE, True, 3, False) == (
        4000, True, 3, False)
    assert DetectionTTA(ours, 600).min_sizes == (600,)
    assert len(DetectionTTA(ours, SIZES, flip=False).augment(photo_tensor("voc"))) == len(SIZES)

    torchvision_flavour = create_detector("faster_rcnn", "resnest50", 81, norm="bn", flavour="torchvision",
                                          progress=False)
    with pytest.raises(ValueError, match="torchvision-flavour detectors .* not supported.*flavour='detectron2'"):
        DetectionTTA(torchvision_flavour)
    with pytest.raises(ValueError, match="create_detector"):
        DetectionTTA(torch.nn.Linear(2, 2))
    panoptic = create_detector("panoptic_fpn", "resnest50", 81, norm="bn", progress=False)
    with pytest.raises(ValueError, match="Panoptic FPN is not supported"):
        DetectionTTA(panoptic)
    for kwargs, message in [(dict(min_sizes=()), "min_sizes is empty"), (dict(min_sizes=(400, 0)), "positive"),
                            (dict(min_sizes=(400.0,)), "positive integers"), (dict(max_size=0), "max_size"),
                            (dict(flip="yes"), "flip"), (dict(batch_size=0), "batch_size"),
                            (dict(pre_resize=None), "pre_resize")]:
        with pytest.raises(ValueError, match=message):
            DetectionTTA(ours, **kwargs)
    with pytest.raises(ValueError, match="RGB CHW"):
        tta([torch.rand(1, 3, 32, 32)])
    ours.train()
    try:
        with pytest.raises(RuntimeError, match=r"\.eval\(\)"):
            tta([photo_tensor("voc")])
    finally:
        ours.eval()
