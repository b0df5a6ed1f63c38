"""Segmentation data (ADE20K / VOC / Pascal Context / Cityscapes / folder layouts, transforms) and metrics
(confusion matrix, inference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from splitattn.classification.fashion_mnist import DEBIAN_DIR
from splitattn.data.images import DatasetError
from splitattn.engine.config import ConfigError
from splitattn.segmentation.config import load_segment_config
from splitattn.segmentation.data import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_TRAIN_IDS,
    PCONTEXT_CLASSES,
    VOC_CLASSES,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    ade20k,
    build_segmentation_data,
    cityscapes,
    cityscapes_label_map,
    collate_segmentation,
    folder,
    pcontext,
    voc,
)
from splitattn.segmentation.metrics import ConfusionMatrix, predict_logits
from tests.voc_photo import load_voc_photo

# ---------------------------------------------------------------------------------------------- metrics


def test_confusion_matrix_hand_computed():
    cm = ConfusionMatrix(3, ignore_index=255)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm.update(pred, target)
    # rows = target, columns = prediction; the 255 pixel (predicted 2) is not counted anywhere
    assert cm.matrix.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    assert cm.num_pixels == 7
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)
    # IoU_0 = 1 / (2 + 3 - 1), IoU_1 = 2 / (3 + 3 - 2), IoU_2 = 1 / (2 + 1 - 1)
    assert cm.iou().tolist() == pytest.approx([0.25, 0.5, 0.5])
    assert cm.mean_iou() == pytest.approx(1.25 / 3)
    assert cm.class_accuracy().tolist() == pytest.approx([0.5, 2 / 3, 0.5])
    s = cm.summary(["a", "b", "c"])
    assert s["pixel_accuracy"] == pytest.approx(4 / 7) and s["iou"]["b"] == pytest.approx(0.5)
    cm.update(pred, target)  # accumulates
    assert cm.matrix.tolist() == [[2, 2, 0], [2, 4, 0], [2, 0, 2]]
    assert cm.mean_iou() == pytest.approx(1.25 / 3)


def test_confusion_matrix_absent_and_false_positive_classes():
    cm = ConfusionMatrix(5)
    cm.update(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 255, 1]))
    iou = cm.iou()
    # class 0: 1/1; class 1: TP 1, FN 1 -> 1/2; class 2 and 4 absent -> NaN; class 3 predicted only -> 0
    assert iou[0] == 1.0 and iou[1] == 0.5 and iou[3] == 0.0
    assert math.isnan(iou[2]) and math.isnan(iou[4])
    assert cm.mean_iou() == pytest.approx(1.5 / 3)
    summary = cm.summary()
    assert summary["iou"]["2"] is None and summary["accuracy"]["3"] is None


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match=r"target value\(s\) 3, 7 outside 0..2"):
        cm.update(torch.tensor([0, 1, 2]), torch.tensor([3, 7, 0]))
    with pytest.raises(ValueError, match="prediction value"):
        cm.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    assert cm.num_pixels == 0  # nothing was half-added
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(3, ignore_index=1)
    assert cm.all_reduce() is cm  # no process group: no-op


# ---------------------------------------------------------------------------------------------- inference


def _tiny_net(kernel: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, kernel, padding=kernel // 2), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


def test_predict_single_scale_equals_forward():
    net = _tiny_net()
    image = torch.rand(3, 20, 27)
    expected = net(image[None])[0]
    assert torch.equal(predict_logits(net, image, 4), expected)
    # dict output (torchvision) and a lower-resolution output that is upsampled
    assert torch.equal(predict_logits(lambda x: {"out": net(x)}, image[None], 4), expected)
    down = nn.Sequential(net, nn.AvgPool2d(2))
    got = predict_logits(down, image, 4)
    ref = nn.functional.interpolate(down(image[None]), size=(20, 27), mode="bilinear", align_corners=True)[0]
    assert torch.equal(got, ref)
    with pytest.raises(ValueError, match="num_classes=5"):
        predict_logits(net, image, 5)


def test_predict_flip_and_scales_by_hand():
    net = _tiny_net()
    image = torch.rand(1, 3, 16, 24)
    plain = net(image)
    mirrored = net(image.flip(-1)).flip(-1)
    assert torch.allclose(predict_logits(net, image, 4, flip=True), ((plain + mirrored) / 2)[0], atol=1e-6)

    small = nn.functional.interpolate(image, size=(8, 12), mode="bilinear", align_corners=True)
    small_up = nn.functional.interpolate(net(small), size=(16, 24), mode="bilinear", align_corners=True)
    got = predict_logits(net, image, 4, scales=(0.5, 1.0))
    assert torch.allclose(got, ((small_up + plain) / 2)[0], atol=1e-6)
    # base_size sets the long side (PyTorch-Encoding): 24 * 0.5 -> long side 12, short side 8
    assert torch.allclose(predict_logits(net, image, 4, scales=(0.5,), base_size=24), small_up[0], atol=1e-6)
    probs = predict_logits(net, image, 4, combine="softmax")
    assert torch.allclose(probs.sum(0), torch.ones(16, 24), atol=1e-5)


def test_sliding_window_stitches_exactly_for_pointwise_model():
    net = _tiny_net(kernel=1)  # no spatial context: each window sees exactly the pixels it scores
    image = torch.rand(3, 37, 50)
    whole = net(image[None])[0]
    for crop in (16, (20, 12), 64):  # overlapping windows, uneven last windows, crop larger than the image
        got = predict_logits(net, image, 4, crop_size=crop)
        assert torch.allclose(got, whole, atol=1e-6), crop
    got = predict_logits(net, image, 4, crop_size=16, flip=True, scales=(1.0, 1.0))
    assert torch.allclose(got, whole, atol=1e-6)
    # padding reaches a model with context: a 3x3 model differs at the window borders
    assert not torch.allclose(predict_logits(_tiny_net(), image, 4, crop_size=16), _tiny_net()(image[None])[0])


# ---------------------------------------------------------------------------------------------- fixtures


def _voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


@pytest.fixture(scope="module")
def voc_photo():
    data = load_voc_photo()
    rgb = np.asarray(data["rgb"], np.uint8)
    label = np.asarray(data["class_label"]).astype(np.uint8)
    label[:6, :] = 255  # an ignore region, as VOC's object borders
    label[:, -6:] = 255
    return rgb, label, list(data["class_names"])


def _write_voc(root, rgb, label):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, (img, lab) in {"2007_000001": (rgb, label), "2007_000002": (rgb[:, ::-1], label[:, ::-1])}.items():
        Image.fromarray(np.ascontiguousarray(img)).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        pal = Image.fromarray(np.ascontiguousarray(lab), "P")
        pal.putpalette(_voc_palette())
        pal.save(root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2007_000002\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n")


def _ade_label(voc_label: np.ndarray) -> np.ndarray:
    """VOC classes re-coded as ADE20K values: 0 other, class k -> 7 k, border -> 150."""
    ade = voc_label.astype(np.int64) * 7
    ade[voc_label == 255] = 150
    return ade.astype(np.uint8)


def _write_ade(root, rgb, label, split="training"):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(root / "images" / split / "ADE_train_00000001.jpg", quality=95)
    Image.fromarray(_ade_label(label), "L").save(root / "annotations" / split / "ADE_train_00000001.png")
    crop = np.ascontiguousarray(rgb[50:250, 100:400])
    Image.fromarray(crop).convert("L").save(root / "images" / split / "ADE_train_00000002.jpg")  # grayscale
    crop_label = _ade_label(label[50:250, 100:400])
    Image.fromarray(crop_label, "L").save(root / "annotations" / split / "ADE_train_00000002.png")


# ---------------------------------------------------------------------------------------------- datasets


def test_ade20k_layout_mapping_and_grayscale(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    _write_ade(tmp_path / "ADEChallengeData2016", rgb, label)
    ds = ade20k(tmp_path, "train")  # parent folder and the 'train' alias both accepted
    assert len(ds) == 2 and ds.num_classes == 150 and len(ADE20K_CLASSES) == 150
    assert ds.class_names[0] == "wall" and ds.class_names[-1] == "flag"
    image, target = ds[0]
    assert image.shape == (3, 375, 500) and image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    expected = _ade_label(label).astype(np.int64) - 1
    expected[_ade_label(label) == 0] = 255
    assert target.dtype == torch.int64 and torch.equal(target, torch.from_numpy(expected))
    assert set(target.unique().tolist()) == {255, 34, 62, 76, 104, 149}  # VOC 5, 9, 11, 15 -> 7k - 1; 150 -> 149
    gray, gray_target = ds[1]
    assert gray.shape == (3, 200, 300) and torch.equal(gray[0], gray[1])
    stats = ds.check()
    assert stats["images"] == 2 and sum(stats["class_pixels"]) + stats["ignored_pixels"] == 375 * 500 + 200 * 300


def test_ade20k_bad_labels_and_sizes(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    root = tmp_path / "ade"
    _write_ade(root, rgb, label)
    bad = _ade_label(label)
    bad[0, 0] = 200
    Image.fromarray(bad, "L").save(root / "annotations/training/ADE_train_00000001.png")
    ds = ade20k(root, "training")
    with pytest.raises(ValueError, match=r"ADE_train_00000001\.png holds value\(s\) 199 .*ADE20K .*1\.\.150"):
        ds[0]
    with pytest.raises(ValueError, match="1 bad sample"):
        ds.check()
    # already-reduced labels with the default mapping: 255 -> 254 is caught, the message names the fix
    Image.fromarray(label, "L").save(root / "annotations/training/ADE_train_00000001.png")
    with pytest.raises(ValueError, match="reduce_zero_label=False"):
        ds[0]
    reduced = ade20k(root, "training", reduce_zero_label=False)
    assert torch.equal(reduced[0][1], torch.from_numpy(label.astype(np.int64)))
    # size mismatch
    Image.fromarray(_ade_label(label)[:-1], "L").save(root / "annotations/training/ADE_train_00000001.png")
    with pytest.raises(ValueError, match=r"is 500x375 \(WxH\) but its label .* is 500x374"):
        ds[0]
    # colour label, missing label, empty split
    Image.fromarray(rgb).save(root / "annotations/training/ADE_train_00000001.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        ds[0]
    (root / "annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="have no label PNG"):
        ade20k(root, "training")
    (root / "images/validation").mkdir()
    (root / "annotations/validation").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ade20k(root, "validation")
    with pytest.raises(FileNotFoundError, match="ADEChallengeData2016 layout"):
        ade20k(tmp_path / "nowhere")


def test_voc_layout_palette_labels(tmp_path, voc_photo):
    rgb, label, names = voc_photo
    _write_voc(tmp_path / "VOCdevkit" / "VOC2012", rgb, label)
    ds = voc(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names == names == list(VOC_CLASSES)
    image, target = ds[0]
    assert image.shape == (3, 375, 500)
    assert torch.equal(target, torch.from_numpy(label.astype(np.int64)))  # palette indices, 255 kept
    assert torch.equal(ds[1][1], torch.from_numpy(label[:, ::-1].astype(np.int64)))
    assert len(voc(tmp_path / "VOCdevkit", "val")) == 1
    assert ds.check()["ignored_pixels"] == int((label == 255).sum()) * 2
    with pytest.raises(FileNotFoundError, match="available: train, val"):
        voc(tmp_path, "trainaug")
    # RGBA / palette images become RGB
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg", "PNG")
    assert ds[0][0].shape == (3, 375, 500)


# Pascal Context (mmseg's converter layout): the VOC photo's classes re-coded as their Pascal Context values
# (1 + index in PCONTEXT_CLASSES; VOC 'diningtable' is Context 'table'), background 0, VOC's border -> 'wall',
# and a bottom strip of the last class ('wood', 59).
_CONTEXT_NAME = {"diningtable": "table"}


def _pcontext_label(voc_label: np.ndarray) -> np.ndarray:
    raw = np.zeros(voc_label.shape, np.uint8)
    for k, name in enumerate(VOC_CLASSES[1:], 1):
        raw[voc_label == k] = PCONTEXT_CLASSES.index(_CONTEXT_NAME.get(name, name)) + 1
    raw[voc_label == 255] = PCONTEXT_CLASSES.index("wall") + 1
    raw[-5:] = 59
    return raw


def _write_pcontext(voc2010, rgb, label):
    for sub in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (voc2010 / sub).mkdir(parents=True, exist_ok=True)
    raw = _pcontext_label(label)
    for stem, (img, lab) in {"2008_000002": (rgb, raw), "2008_000003": (rgb[:, ::-1], raw[:, ::-1])}.items():
        Image.fromarray(np.ascontiguousarray(img)).save(voc2010 / "JPEGImages" / f"{stem}.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(lab), "L").save(voc2010 / "SegmentationClassContext" / f"{stem}.png")
    (voc2010 / "ImageSets/SegmentationContext/train.txt").write_text("2008_000002\n2008_000003\n")
    (voc2010 / "ImageSets/SegmentationContext/val.txt").write_text("2008_000003\n")
    return raw


def test_pcontext_layout_reduce_zero_label(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    voc2010 = tmp_path / "VOCdevkit" / "VOC2010"
    raw = _write_pcontext(voc2010, rgb, label)
    ds = pcontext(tmp_path, "train")  # the folder holding VOCdevkit
    assert len(ds) == 2 and ds.num_classes == 59 and ds.ignore_index == 255
    assert ds.class_names == list(PCONTEXT_CLASSES) and (ds.class_names[0], ds.class_names[-1]) == ("aeroplane", "wood")
    assert [p.name for p in ds.images] == ["2008_000002.jpg", "2008_000003.jpg"]
    assert [p.name for p in ds.labels] == ["2008_000002.png", "2008_000003.png"]
    image, target = ds[0]
    assert image.shape == (3, 375, 500) and target.dtype == torch.int64
    # mmseg's reduce_zero_label: 0 -> ignore, v -> v - 1; PyTorch-Encoding's `mask - 1` gives the same, -1 = ignored
    encoding = torch.from_numpy(raw.astype(np.int64) - 1)
    assert torch.equal(target[encoding >= 0], encoding[encoding >= 0]) and (target[encoding < 0] == 255).all()
    values = set(target.unique().tolist())
    assert values <= set(range(59)) | {255} and {58, 255} <= values
    # the photo's objects come out under their own names (above the 'wood' strip)
    for k in (5, 9, 11, 15):  # bottle, chair, diningtable, person
        name = _CONTEXT_NAME.get(VOC_CLASSES[k], VOC_CLASSES[k])
        assert {PCONTEXT_CLASSES[v] for v in target[:-5][torch.from_numpy(label[:-5] == k)].tolist()} == {name}
    assert torch.equal(ds[1][1], target.flip(-1))  # each image with its own label
    stats = ds.check()
    assert stats["ignored_pixels"] == 2 * int((raw == 0).sum()) and stats["class_pixels"][58] == 2 * 5 * 500
    # VOCdevkit or VOC2010 as root, the 'validation' alias
    assert len(pcontext(tmp_path / "VOCdevkit", "val")) == 1 and len(pcontext(voc2010, "validation")) == 1
    # labels already reduced (0..58, 255 background)
    reduced = np.where(raw == 0, 255, raw.astype(np.int64) - 1).astype(np.uint8)
    Image.fromarray(reduced, "L").save(voc2010 / "SegmentationClassContext/2008_000002.png")
    assert torch.equal(pcontext(voc2010, reduce_zero_label=False)[0][1], target)


def test_pcontext_bad_input(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    voc2010 = tmp_path / "VOC2010"
    raw = _write_pcontext(voc2010, rgb, label)
    ds = pcontext(voc2010, "train")
    label_png = voc2010 / "SegmentationClassContext/2008_000002.png"
    # raw 459-class ids (labels.txt: 420 'tree', 440 'wall'), as a 16-bit PNG
    Image.fromarray(np.where(raw > 0, 420, 0).astype(np.uint16)).save(label_png)
    with pytest.raises(ValueError, match=r"2008_000002\.png holds value\(s\) 419 .*raw 459-class labels"
                                         r".*pascal_context\.py"):
        ds[0]
    bad = raw.copy()
    bad[0, 0] = 60
    Image.fromarray(bad, "L").save(label_png)
    with pytest.raises(ValueError, match=r"holds value\(s\) 59 .*outside the classes 0\.\.58"):
        ds[0]
    with pytest.raises(ValueError, match="1 bad sample"):
        ds.check()
    # already-reduced labels read with the default mapping: the message names the fix
    Image.fromarray(np.where(raw == 0, 255, raw - 1).astype(np.uint8), "L").save(label_png)
    with pytest.raises(ValueError, match="reduce_zero_label=False"):
        ds[0]
    Image.fromarray(raw[:-1], "L").save(label_png)
    with pytest.raises(ValueError, match=r"is 500x375 \(WxH\) but its label .* is 500x374"):
        ds[0]
    (voc2010 / "SegmentationClassContext/2008_000003.png").unlink()
    with pytest.raises(FileNotFoundError,
                       match=r"Pascal Context train: 1 of 2 label files are missing, e.g. .*2008_000003\.png"):
        pcontext(voc2010, "train")
    with pytest.raises(FileNotFoundError, match="available: train, val"):
        pcontext(voc2010, "test")
    with pytest.raises(FileNotFoundError, match="no ImageSets/SegmentationContext under .*nowhere"):
        pcontext(tmp_path / "nowhere")
    # a plain VOC2010 download, not yet converted
    (tmp_path / "plain" / "VOC2010" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="JPEGImages but no ImageSets/SegmentationContext; .*pascal_context"):
        pcontext(tmp_path / "plain")
    (voc2010 / "SegmentationClassContext").rename(voc2010 / "elsewhere")
    with pytest.raises(FileNotFoundError, match="label folder .*SegmentationClassContext does not exist"):
        pcontext(voc2010)


# Cityscapes: three real photos in two cities; label ids in 15-px column stripes cycling through every id 0..33,
# with the photo's people painted as 'person' (24) and the rest of its objects as 'car' (26).
_CITYSCAPES_STEMS = ("aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bochum/bochum_000000_000313")


def _cityscapes_oracle():
    """cityscapesscripts' label table (a test oracle: `pip install --no-deps cityscapesscripts==2.3.0`)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as err:
        raise pytest.UsageError("test oracle 'cityscapesscripts' is not installed: run `make test` (or "
                                f"`pip install --no-deps cityscapesscripts==2.3.0`) ({err})") from None
    return labels


def _cityscapes_lut() -> np.ndarray:
    """label id 0..33 -> train id, 255 for every id cityscapesscripts does not evaluate (trainId 255 or -1)."""
    lut = np.full(34, 255, np.int64)
    for lab in _cityscapes_oracle():
        if lab.id >= 0 and 0 <= lab.trainId < 19:
            lut[lab.id] = lab.trainId
    return lut


def _cityscapes_label_ids(voc_label: np.ndarray) -> np.ndarray:
    ids = np.broadcast_to((np.arange(voc_label.shape[1]) // 15) % 34, voc_label.shape).astype(np.uint8)
    ids = np.where((voc_label > 0) & (voc_label != 255), 26, ids)
    return np.where(voc_label == 15, 24, ids).astype(np.uint8)


def _write_cityscapes(root, rgb, label, split="train", train_ids=False):
    ids = _cityscapes_label_ids(label)
    pairs = [(rgb, ids), (rgb[:, ::-1], ids[:, ::-1]), (rgb[40:300, 60:460], ids[40:300, 60:460])]
    written = {}
    for stem, (img, lab) in zip(_CITYSCAPES_STEMS, pairs):
        image = root / "leftImg8bit" / split / f"{stem}_leftImg8bit.png"
        gt = root / "gtFine" / split / f"{stem}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        gt.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img)).save(image)
        Image.fromarray(np.ascontiguousarray(lab), "L").save(gt)
        if train_ids:
            Image.fromarray(_cityscapes_lut()[lab].astype(np.uint8), "L").save(
                root / "gtFine" / split / f"{stem}_gtFine_labelTrainIds.png")
        written[stem] = lab
    return written


def test_cityscapes_table_matches_cityscapesscripts():
    labels = _cityscapes_oracle()
    assert len(CITYSCAPES_TRAIN_IDS) == len(labels) == 35
    assert {lab.id: lab.trainId if 0 <= lab.trainId < 19 else 255 for lab in labels} == CITYSCAPES_TRAIN_IDS
    evaluated = sorted((lab for lab in labels if 0 <= lab.trainId < 19), key=lambda lab: lab.trainId)
    assert [lab.trainId for lab in evaluated] == list(range(19))
    assert list(CITYSCAPES_CLASSES) == [lab.name for lab in evaluated]
    mapped = cityscapes_label_map()(np.arange(-1, 34))  # -1: the licence plate, which no PNG can hold
    assert mapped.tolist() == [255, *_cityscapes_lut().tolist()]
    assert (cityscapes_label_map(ignore_index=-1)(np.arange(34)) == np.where(_cityscapes_lut() == 255, -1,
                                                                              _cityscapes_lut())).all()
    with pytest.raises(ValueError, match=r"value\(s\) 34, 255 are not Cityscapes label ids"):
        cityscapes_label_map()(np.array([[0, 34], [255, 7]]))


def test_cityscapes_layout_label_ids_and_train_ids(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    root = tmp_path / "cityscapes"
    written = _write_cityscapes(root, rgb, label)
    ds = cityscapes(tmp_path, "train")  # the parent of cityscapes/ is accepted
    assert len(ds) == 3 and (ds.num_classes, ds.ignore_index) == (19, 255)
    assert ds.class_names == list(CITYSCAPES_CLASSES)
    lut = _cityscapes_lut()
    for i, stem in enumerate(_CITYSCAPES_STEMS):  # sorted by city, each image with its own label file
        assert ds.images[i] == root / "leftImg8bit/train" / f"{stem}_leftImg8bit.png"
        assert ds.labels[i] == root / "gtFine/train" / f"{stem}_gtFine_labelIds.png"
        image, target = ds[i]
        assert image.shape[1:] == target.shape == written[stem].shape
        assert torch.equal(target, torch.from_numpy(lut[written[stem]]))
    target = ds[0][1]
    assert set(target.unique().tolist()) == set(range(19)) | {255}
    assert CITYSCAPES_CLASSES[int(target[torch.from_numpy(label == 15)].unique())] == "person"
    stats = ds.check()
    assert stats["images"] == 3 and min(stats["class_pixels"]) > 0
    # createTrainIdLabelImgs output, when every image has one, is read instead (the label ids are not needed)
    _write_cityscapes(root, rgb, label, train_ids=True)
    (root / "gtFine/train" / f"{_CITYSCAPES_STEMS[0]}_gtFine_labelIds.png").unlink()
    by_train_ids = cityscapes(root, "train")
    assert all(p.name.endswith("_gtFine_labelTrainIds.png") for p in by_train_ids.labels)
    assert by_train_ids.label_map is None
    assert all(torch.equal(by_train_ids[i][1], ds[i][1]) for i in (1, 2))
    # one train-id file short: the label ids are read for the whole split, and the image without any label is named
    (root / "gtFine/train" / f"{_CITYSCAPES_STEMS[2]}_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images have no _gtFine_labelIds\.png label \(nor a "
                                                r"_gtFine_labelTrainIds\.png\), e\.g\. .*aachen_000000_000019_gtFine"
                                                r"_labelIds\.png for .*aachen_000000_000019_leftImg8bit\.png"):
        cityscapes(root, "train")
    with pytest.raises(FileNotFoundError, match="1 of 3 images have no _gtFine_labelTrainIds.png label, e.g. .*bochum"):
        cityscapes(root, "train", label_type="labelTrainIds")


def test_cityscapes_bad_input(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    written = _write_cityscapes(tmp_path, rgb, label, split="val")
    ds = cityscapes(tmp_path, "val")
    gt = tmp_path / "gtFine/val" / f"{_CITYSCAPES_STEMS[1]}_gtFine_labelIds.png"
    bad = written[_CITYSCAPES_STEMS[1]].copy()
    bad[0, 0] = 40
    Image.fromarray(bad, "L").save(gt)
    with pytest.raises(ValueError, match=r"aachen_000001_000019_gtFine_labelIds\.png: value\(s\) 40 are not "
                                         r"Cityscapes label ids .*colour"):
        ds[1]
    with pytest.raises(ValueError, match="1 bad sample"):
        ds.check()
    Image.fromarray(rgb[:, ::-1].copy()).save(gt)  # a colour map where the label ids should be
    with pytest.raises(ValueError, match="mode 'RGB'"):
        ds[1]
    # train-id files that hold something else
    Image.fromarray(bad, "L").save(gt)
    for stem in _CITYSCAPES_STEMS:
        Image.fromarray(np.full((2, 2), 19, np.uint8), "L").save(
            tmp_path / "gtFine/val" / f"{stem}_gtFine_labelTrainIds.png")
    with pytest.raises(ValueError, match=r"holds value\(s\) 19, outside the classes 0\.\.18 .*label_type='labelIds'"):
        cityscapes(tmp_path, "val")[0]
    # the test split: no labels to score, images alone on request
    (tmp_path / "leftImg8bit/test/berlin").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png")
    with pytest.raises(ValueError, match="test labels are withheld.*labels=False"):
        cityscapes(tmp_path, "test")
    test = cityscapes(tmp_path, "test", labels=False)
    assert len(test) == 1 and test[0][1] is None and test[0][0].shape == (3, 375, 500)
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'"):
        cityscapes(tmp_path, "train_extra")
    with pytest.raises(FileNotFoundError, match=r"image folder .*leftImg8bit/train does not exist"):
        cityscapes(tmp_path, "train")
    (tmp_path / "leftImg8bit/train").mkdir()
    with pytest.raises(ValueError, match="no CITY/\\*_leftImg8bit.png images"):
        cityscapes(tmp_path, "train")
    (tmp_path / "leftImg8bit/train/aachen").mkdir()
    Image.fromarray(rgb).save(tmp_path / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    with pytest.raises(FileNotFoundError, match=r"label folder .*gtFine/train does not exist"):
        cityscapes(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="has no leftImg8bit/ folder; expected the Cityscapes layout"):
        cityscapes(tmp_path / "gtFine")


def test_build_segmentation_data_pcontext_and_cityscapes(tmp_path, voc_photo):
    rgb, label, _ = voc_photo
    _write_pcontext(tmp_path / "context" / "VOCdevkit" / "VOC2010", rgb, label)
    _write_cityscapes(tmp_path / "cityscapes", rgb, label, split="train")
    _write_cityscapes(tmp_path / "cityscapes", rgb, label, split="val")
    size = ["data.base_size=64", "data.crop_size=48"]
    for dataset, root, sizes, classes in [("pcontext", "context", (2, 1), PCONTEXT_CLASSES),
                                          ("cityscapes", "cityscapes", (3, 3), CITYSCAPES_CLASSES)]:
        cfg = load_segment_config(None, [f"data.dataset={dataset}", f"data.root={tmp_path / root}", *size])
        train, val = build_segmentation_data(cfg.data)
        assert (len(train), len(val)) == sizes and train.class_names == val.class_names == list(classes)
        assert isinstance(train.transform, SegmentationTrainTransform)
        torch.manual_seed(0)
        image, target = train[0]
        assert image.shape == (3, 48, 48) and target.shape == (48, 48)
        assert set(target.unique().tolist()) <= set(range(len(classes))) | {255}
        image, target = val[0]
        assert image.shape[1:] == target.shape and target.shape[0] in (375, 260)
    with pytest.raises(ConfigError, match="Cityscapes test labels are withheld"):
        load_segment_config(None, ["data.dataset=cityscapes", "data.val_split=test"])
    with pytest.raises(ConfigError, match="'cityscapes'"):
        load_segment_config(None, ["data.dataset=cityscape"])


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory):
    if not DEBIAN_DIR.is_dir():
        raise pytest.UsageError("Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist`")
    from benchmarks.scenes.generator import make_scenes

    root = tmp_path_factory.mktemp("scenes")
    make_scenes(root, 4, 2, size=64, progress=False)
    return root


def test_folder_dataset_on_the_scenes(scene_root):
    names = ["background", "T-shirt/top", *(f"garment {i}" for i in range(2, 11))]
    train = folder(scene_root, "train", num_classes=11, class_names=names, label_dir="semantic")
    val = folder(scene_root, "val", num_classes=11, label_dir="semantic")
    assert (len(train), len(val)) == (4, 2) and train.num_classes == 11
    assert train.class_names[1] == "T-shirt/top" and val.class_names[1] == "class 1"
    stats = train.check()
    assert stats["ignored_pixels"] == 0 and stats["class_pixels"][0] > 0 and sum(stats["class_pixels"][1:]) > 0
    image, target = train[0]
    assert image.shape == (3, 64, 64) and target.shape == (64, 64) and int(target.max()) <= 10
    train.transform = SegmentationTrainTransform(base_size=64, crop_size=48)
    images, labels = collate_segmentation([train[i] for i in range(4)])
    assert images.shape == (4, 3, 48, 48) and labels.shape == (4, 48, 48) and labels.dtype == torch.int64


# ---------------------------------------------------------------------------------------------- transforms


def _coded_pair(size=64, block=16, seed=0):
    """An image whose colour encodes the class of each pixel (VOC palette colours of 16-px blocks)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 11, size=(size // block, size // block))
    label = np.kron(grid, np.ones((block, block), np.int64)).astype(np.uint8)
    colours = np.array(_voc_palette()[: 3 * 11], np.float64).reshape(11, 3)
    return Image.fromarray(colours[label].astype(np.uint8)), Image.fromarray(label, "L"), colours


def _decode(image: torch.Tensor, colours: np.ndarray) -> torch.Tensor:
    pixels = image.permute(1, 2, 0).numpy() * 255
    return torch.from_numpy(((pixels[:, :, None, :] - colours[None, None]) ** 2).sum(-1).argmin(-1))


def test_train_transform_shapes_alignment_and_determinism():
    image, label, colours = _coded_pair()
    t = SegmentationTrainTransform(base_size=64, crop_size=48)
    interior = 0
    for seed in range(6):
        torch.manual_seed(seed)
        img, lab = t(image, label)
        assert img.shape == (3, 48, 48) and lab.shape == (48, 48) and lab.dtype == torch.int64
        valid = lab != 255
        # pixels whose 7x7 label neighbourhood is one class are far from any blending at block borders
        padded = nn.functional.pad(lab[None, None].float(), (3, 3, 3, 3), value=-1)
        lo = -nn.functional.max_pool2d(-padded, 7, 1)[0, 0]
        hi = nn.functional.max_pool2d(padded, 7, 1)[0, 0]
        deep = valid & (lo == hi)
        assert torch.equal(_decode(img, colours)[deep], lab[deep])
        interior += int(deep.sum())
        torch.manual_seed(seed)
        img2, lab2 = t(image, label)
        assert torch.equal(img, img2) and torch.equal(lab, lab2)
    assert interior > 1000


def test_train_transform_pads_with_ignore():
    image, label, _ = _coded_pair()
    t = SegmentationTrainTransform(base_size=64, crop_size=48, scale_range=(0.5, 0.5), flip_prob=0.0)
    img, lab = t(image, label)  # 64 -> 32, padded right/bottom to 48: the crop can only start at (0, 0)
    assert (lab[32:] == 255).all() and (lab[:, 32:] == 255).all() and (lab[:32, :32] != 255).all()
    assert (img[:, 32:] == 0).all() and (img[:, :, 32:] == 0).all()
    flipped = SegmentationTrainTransform(base_size=64, crop_size=48, scale_range=(0.5, 0.5), flip_prob=1.0)
    img_f, lab_f = flipped(image, label)
    assert torch.equal(lab_f[:32, :32], lab[:32, :32].flip(-1)) and (lab_f[32:] == 255).all()
    t = SegmentationTrainTransform(base_size=64, crop_size=48, ignore_index=-1, scale_range=(0.5, 0.5))
    assert (t(image, label)[1][40:] == -1).all()


def test_eval_transform_keeps_label():
    image, label, _ = _coded_pair(size=64)
    wide = image.resize((96, 64), Image.NEAREST)
    wide_label = label.resize((96, 64), Image.NEAREST)
    img, lab = SegmentationEvalTransform(base_size=32)(wide, wide_label)
    assert img.shape == (3, 32, 48) and torch.equal(lab, torch.from_numpy(np.asarray(wide_label).astype(np.int64)))
    img, lab = SegmentationEvalTransform()(wide, wide_label)
    assert img.shape == (3, 64, 96)
    images, labels = collate_segmentation([(img, lab), (img[:, :32], lab[:32])])
    assert isinstance(images, list) and isinstance(labels, list)
    with pytest.raises(ValueError, match="label size"):
        SegmentationEvalTransform()(wide, label)


def test_folder_dataset_bad_input(scene_root):
    with pytest.raises(DatasetError, match="needs data.num_classes"):
        folder(scene_root, "train")
    with pytest.raises(DatasetError, match="label folder .*labels does not exist"):
        folder(scene_root, "train", num_classes=11)  # the scenes keep their maps in semantic/, not labels/
    with pytest.raises(DatasetError, match="lists 2 names for data.num_classes=11"):
        folder(scene_root, "train", num_classes=11, class_names=["a", "b"], label_dir="semantic")
    too_few = folder(scene_root, "train", num_classes=3, label_dir="semantic")  # the maps hold up to class 10
    with pytest.raises(ValueError, match="outside the classes 0..2"):
        too_few.check()
