"""DCNv2 in the split-attention backbone: the op against its equation, the plug-in's layout, training.

* :class:`splitattn.layers.DeformConv2d` (torchvision's ``deform_conv2d`` + the plug-in's offset/mask split)
  equals the equation written out (``tests/oracles/dcn_reference.py``), forward and every gradient, in float64;
* the official detectron2 plug-in's DCN detector (``faster_rcnn_ResNeSt_50_FPN_dcn``), with its CUDA-only op
  replaced by that same written-out equation, gives our outputs on the same weights: the plug-in's own chunking
  of ``conv2_offset`` runs unchanged, so a wrong channel order on our side would show;
* a DCN detector trains on the real VOC photo (the DCN checkpoints' key sets load strictly: test_detection_zoo).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitattn import create_model
from splitattn.detection import create_detector
from splitattn.detection.convert import from_detectron2
from splitattn.detection.data import CocoDetection, collate_detection
from splitattn.layers import DeformConv2d, DeformSplitAttention, offset_conv
from splitattn.models.key_converters import from_official, to_official
from tests.oracles.dcn_reference import deform_conv_reference, detectron2_modulated_deform_conv
from tests.overfit import overfit
from tests.voc_photo import photo_tensor, write_voc_photo_coco

CASES = [  # (in, out, stride, dilation, groups, deform groups, modulated, bias)
    (4, 6, 1, 1, 1, 1, True, False),
    (8, 8, 2, 1, 2, 2, True, True),
    (8, 4, 1, 2, 2, 2, True, False),
    (6, 6, 2, 2, 3, 3, False, True),
]


@pytest.mark.parametrize("case", CASES)
def test_deform_conv_equals_the_equation_forward_and_gradients(case):
    cin, cout, stride, dilation, groups, dg, modulated, bias = case
    g = torch.Generator().manual_seed(sum(case[:6]))
    conv = DeformConv2d(cin, cout, 3, stride, dilation, dilation, groups, dg, modulated, bias).double()
    with torch.no_grad():
        conv.weight.normal_(generator=g)
        if bias:
            conv.bias.normal_(generator=g)
    x = torch.randn(2, cin, 9, 11, dtype=torch.float64, generator=g, requires_grad=True)
    predictor = offset_conv(cin, 3, stride, dilation, dg, modulated).double()
    out_h, out_w = predictor(x).shape[2:]
    # offsets up to ±3 px: many samples fall between pixels, some outside the map
    raw = torch.randn(2, predictor.out_channels, out_h, out_w, dtype=torch.float64, generator=g) * 1.5
    raw.requires_grad_(True)
    ours = conv(x, raw)

    points = dg * 9
    ref_weight = conv.weight.detach().clone().requires_grad_(True)
    mask = raw[:, 2 * points:].sigmoid() if modulated else None
    theirs = deform_conv_reference(x, raw[:, : 2 * points], mask, ref_weight,
                                   conv.bias.detach() if bias else None, stride, dilation, dilation, groups, dg)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-10

    upstream = torch.randn(ours.shape, dtype=torch.float64, generator=g)
    grads_ours = torch.autograd.grad(ours, (x, raw, conv.weight), upstream)
    grads_ref = torch.autograd.grad(theirs, (x, raw, ref_weight), upstream)
    for name, a, b in zip(("input", "offset+mask", "weight"), grads_ours, grads_ref):
        assert (a - b).abs().max().item() <= 1e-10, name
        assert b.abs().max() > 0, name  # the gradient is not trivially zero


def test_zero_offsets_give_the_plain_conv_times_the_half_mask():
    """A fresh DCNv2 (zero offset conv) is the plain conv scaled by sigmoid(0) = 0.5, DCNv1 the plain conv."""
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    for modulated, scale in ((True, 0.5), (False, 1.0)):
        conv = DeformConv2d(4, 4, 3, 1, 1, 1, 1, 2, modulated).double()
        offsets = offset_conv(4, 3, 1, 1, 2, modulated).double()(x)
        plain = torch.nn.functional.conv2d(x, conv.weight, padding=1)
        assert torch.allclose(conv(x, offsets), scale * plain, atol=1e-12)
    with pytest.raises(ValueError, match="54 channels, expected 36"):
        DeformConv2d(4, 4, 3, 1, 1, 1, 1, 2, modulated=False)(x, torch.zeros(1, 54, 8, 8, dtype=torch.float64))


def test_dcn_backbone_layout_init_and_imagenet_weights(tmp_path):
    model = create_model("resnest50", deform_stages=(2, 3, 4), deform_groups=2)
    offsets = [k for k in model.state_dict() if "conv2_offset" in k]
    assert len(offsets) == 2 * (4 + 6 + 3)  # every block of res3-res5, weight + bias
    block = model.layer3[0]
    assert isinstance(block.conv2, DeformSplitAttention) and block.conv2_offset.groups == 2
    assert block.conv2_offset.out_channels == 54 and block.conv2_offset.stride == (1, 1)  # avd: stride in the pool
    assert model.layer1[0].conv2_offset is None
    assert all(model.state_dict()[k].abs().sum() == 0 for k in offsets)  # zero init, as the plug-in
    # ImageNet weights (no offsets) load; the 3x3 weights keep their keys
    plain = create_model("resnest50").state_dict()
    torch.save(plain, tmp_path / "plain.pth")
    with pytest.warns(UserWarning, match="kept 13 zero-initialised conv2_offset"):
        loaded = create_model("resnest50", pretrained=tmp_path / "plain.pth", deform_stages=(2, 3, 4), deform_groups=2)
    assert torch.equal(loaded.layer3[0].conv2.conv.weight, plain["layer3.0.conv2.conv.weight"])
    # radix 0 (ResNet-D) gets a deformable plain conv
    resnet = create_model("resnet50d", deform_stages=(4,), deform_groups=1, deform_modulated=False)
    assert isinstance(resnet.layer4[0].conv2, DeformConv2d) and resnet.layer4[0].conv2_offset.out_channels == 18
    with pytest.raises(ValueError, match="deform_stages must list stages 1..4"):
        create_model("resnest50", deform_stages=(5,))
    with pytest.raises(ValueError, match="deform_groups=3 does not divide the 128 channels of stage 2"):
        create_model("resnest50", deform_stages=(2,), deform_groups=3)
    assert create_model("resnest14", deform_stages=4).layer4[0].conv2_offset is not None  # one stage as an int


def test_dcn_keys_round_trip_through_the_detectron2_layout():
    model = create_model("resnest50", deform_stages=(2, 3, 4), deform_groups=2, num_classes=0)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    d2 = from_official(state, "detectron2")
    assert "res3.0.conv2_offset.weight" in d2 and "res5.2.conv2_offset.bias" in d2
    back, _ = to_official(d2)
    assert back.keys() == state.keys()


@pytest.fixture(scope="module")
def d2_dcn_pair():
    """(plug-in DCN Faster R-CNN with the equation as its op, its cfg, ours with the converted weights)."""
    from tests.oracles.detectron2_models import build_oracle, require_detectron2

    require_detectron2()
    import detectron2.layers.deform_conv as d2_deform

    original = getattr(d2_deform, "modulated_deform_conv", None)
    d2_deform.modulated_deform_conv = detectron2_modulated_deform_conv
    try:
        oracle, cfg = build_oracle("faster_rcnn_dcn", **{"INPUT.MIN_SIZE_TEST": 320,
                                                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
        with torch.no_grad():  # offsets away from zero, or the test could not see their channel order
            g = torch.Generator().manual_seed(1)
            for name, p in oracle.named_parameters():
                if "conv2_offset" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * (0.02 if name.endswith("weight") else 0.5))
        ours = create_detector("faster_rcnn", "resnest50", 81, norm="bn", score_thresh=0.0, test_size=320,
                               min_size=320, deform_stages=(2, 3, 4), deform_groups=2, progress=False)
        state, _ = from_detectron2(oracle.state_dict())
        ours.load_state_dict(state, strict=True)
        yield oracle, cfg, ours.eval()
    finally:
        if original is not None:
            d2_deform.modulated_deform_conv = original


def test_plugin_dcn_detector_matches_ours_on_the_same_weights(d2_dcn_pair):
    from tests.oracles.detectron2_models import oracle_input
    from tests.oracles.matching import match

    oracle, cfg, ours = d2_dcn_pair
    assert cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE == [False, True, True, True] and cfg.MODEL.RESNETS.DEFORM_MODULATED
    image = photo_tensor()
    with torch.no_grad():
        inputs = oracle_input(image, cfg)
        images = oracle.preprocess_image([inputs])
        theirs_features = oracle.backbone(images.tensor)
        batch, _ = ours.normalize_and_pad([ours.resize(image)])
        mine_features = ours.features(batch)
        for level, mine in zip(("p2", "p3", "p4", "p5", "p6"), mine_features):
            ref = theirs_features[level]
            rel = ((mine - ref).abs().max() / ref.abs().max()).item()
            assert rel <= 1e-4, f"{level}: relative difference {rel:.2e}"
        theirs = oracle([inputs])[0]["instances"]
        mine = ours([image])[0]
    report = match(mine, {"boxes": theirs.pred_boxes.tensor, "scores": theirs.scores,
                          "labels": theirs.pred_classes + 1})
    print(f"DCN faster_rcnn: {report.line()}")
    assert len(mine["scores"]) == len(theirs) > 0
    assert report.rate >= 0.99 and report.failures == 0, report.line()


def test_dcn_detector_trains_on_the_real_voc_photo(tmp_path):
    ann = write_voc_photo_coco(tmp_path)
    dataset = CocoDetection(ann.parent / "images", ann, train=True, flip_prob=0.0)
    images, targets = collate_detection([dataset[0], dataset[0]])
    images = [i.as_subclass(torch.Tensor) for i in images]
    targets = [{k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
               for t in targets]
    torch.manual_seed(0)
    model = create_detector("faster_rcnn", "resnest14", dataset.num_classes, norm="bn", freeze_at=0,
                            base_planes=16, stem_width=16, fpn_channels=32, box_conv_dim=32, box_fc_dim=128,
                            min_size=192, test_size=192, max_size=256, box_batch_size_per_image=64,
                            rpn_post_nms_train=200, roi_sampling_ratio=2, deform_stages=(2, 3, 4), deform_groups=2)
    history = overfit(model, images, targets, steps=10)
    assert all(np.isfinite(history))
    assert np.mean(history[-3:]) < 0.75 * np.mean(history[:3]), history
    # the offsets learned (zero at init; the zero-initialised last BN γ holds their gradient back only at step 0)
    assert model.backbone.body.layer3[0].conv2_offset.weight.abs().max() > 0
