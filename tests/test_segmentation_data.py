"""Segmentation data (ADE20K / VOC / folder layouts, transforms) and metrics (confusion matrix, inference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from splitattn.classification.fashion_mnist import DEBIAN_DIR
from splitattn.data.images import DatasetError
from splitattn.segmentation.data import (
    ADE20K_CLASSES,
    VOC_CLASSES,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    ade20k,
    collate_segmentation,
    folder,
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
