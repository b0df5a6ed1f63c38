"""PQ / SQ / RQ on hand-drawn 4x6 id maps, worked out in the comments (rules of panopticapi's
https://github.com/cocodataset/panopticapi/blob/master/panopticapi/evaluation.py), and the COCO panoptic
PNG / json files round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from splitattn.detection.panoptic_format import (
    id_to_rgb,
    read_panoptic_png,
    rgb_to_id,
    separated_category_mapping,
    to_coco_panoptic,
    write_panoptic_png,
    write_predictions_json,
)
from splitattn.detection.panoptic_quality import (
    CategoryStat,
    PQStat,
    pq_average,
    pq_compute,
    pq_per_class,
    pq_single_image,
)

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 4, "name": "grass", "isthing": 0},
    {"id": 5, "name": "dog", "isthing": 1},  # in no image: never averaged
]
THINGS, STUFF = [1, 2, 5], [3, 4]  # dataset ids in contiguous order for separated_category_mapping


def grid(text: str) -> np.ndarray:
    return np.array([[int(v) for v in row.split()] for row in text.strip().splitlines()], dtype=np.int64)


def seg(seg_id: int, category_id: int, iscrowd: int = 0) -> dict:
    return {"id": seg_id, "category_id": category_id, "iscrowd": iscrowd}


def scores(stat: PQStat, isthing: bool | None = None) -> tuple[float, float, float, int]:
    result = pq_average(stat, CATEGORIES, isthing)
    return result["pq"], result["sq"], result["rq"], result["n"]


def approx(*values):
    return pytest.approx(values, abs=1e-12)


# --- one TP at IoU 0.6, one FP, one FN (all category 1) -----------------------------------------------------
# gt A (id 1) 8 px, gt B (id 2) 4 px, the bottom half VOID.
TP_FP_FN_GT = grid("""
1 1 1 1 2 2
1 1 1 1 2 2
0 0 0 0 0 0
0 0 0 0 0 0""")
# pred 5: 6 px of A + 2 px of B = 8 px, none on VOID -> IoU(A, 5) = 6 / (8 + 8 - 6 - 0) = 0.6: a match.
#   IoU(B, 5) = 2 / (4 + 8 - 2) = 0.2.
# pred 6: 2 px of A + 2 px of VOID = 4 px -> IoU(A, 6) = 2 / (4 + 8 - 2 - 2) = 0.25; unmatched, and VOID is
#   2/4 = 0.5 of it, not > 0.5, so it is a false positive.
# B is unmatched: a false negative.  Category 1: tp 1, iou 0.6, fp 1, fn 1
#   PQ = 0.6 / (1 + 0.5 + 0.5) = 0.3, SQ = 0.6 / 1 = 0.6, RQ = 1 / 2 = 0.5.
TP_FP_FN_PRED = grid("""
5 5 5 5 5 5
5 5 6 6 0 0
0 0 6 6 0 0
0 0 0 0 0 0""")
TP_FP_FN_SEGMENTS = ([seg(1, 1), seg(2, 1)], [seg(5, 1), seg(6, 1)])

# --- stuff only: sky (id 1, category 3) over grass (id 2, category 4) ---------------------------------------
STUFF_GT = grid("""
1 1 1 1 1 1
1 1 1 1 1 1
2 2 2 2 2 2
2 2 2 2 2 2""")
# predicted sky spills 3 px onto the grass: sky IoU = 12 / (15 + 12 - 12) = 0.8, grass IoU = 9 / (9 + 12 - 9) = 0.75.
STUFF_PRED = grid("""
1 1 1 1 1 1
1 1 1 1 1 1
1 1 1 2 2 2
2 2 2 2 2 2""")
STUFF_SEGMENTS = ([seg(1, 3), seg(2, 4)], [seg(1, 3), seg(2, 4)])


def tp_fp_fn_stat() -> PQStat:
    return pq_single_image(TP_FP_FN_GT, TP_FP_FN_SEGMENTS[0], TP_FP_FN_PRED, TP_FP_FN_SEGMENTS[1], CATEGORIES)


def stuff_stat() -> PQStat:
    return pq_single_image(STUFF_GT, STUFF_SEGMENTS[0], STUFF_PRED, STUFF_SEGMENTS[1], CATEGORIES)


def test_perfect_match_scores_one():
    # Every segment predicted exactly (under other ids): IoU 1 everywhere, no FP / FN.
    gt = grid("""
    1 1 2 2 3 3
    1 1 2 2 3 3
    4 4 4 4 4 4
    4 4 4 4 4 4""")
    pred = gt + 10
    gt_segments = [seg(1, 1), seg(2, 2), seg(3, 3), seg(4, 4)]
    pred_segments = [seg(11, 1), seg(12, 2), seg(13, 3), seg(14, 4)]
    stat = pq_single_image(torch.from_numpy(gt), gt_segments, torch.from_numpy(pred), pred_segments, CATEGORIES)
    assert scores(stat) == approx(1.0, 1.0, 1.0, 4)
    assert scores(stat, True) == approx(1.0, 1.0, 1.0, 2)  # person, car; dog absent
    assert scores(stat, False) == approx(1.0, 1.0, 1.0, 2)


def test_one_tp_one_fp_one_fn():
    stat = tp_fp_fn_stat()
    assert stat[1] == CategoryStat(tp=1, fp=1, fn=1, iou=pytest.approx(0.6, abs=1e-12))
    assert scores(stat) == approx(0.3, 0.6, 0.5, 1)


def test_iou_of_exactly_one_half_is_not_a_match():
    gt = grid("""
    1 1 1 1 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0""")
    half = grid("""
    7 7 0 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0""")
    # IoU = 2 / (2 + 4 - 2 - 0) = 0.5, not > 0.5: gt 1 is a FN, pred 7 (no VOID under it) a FP -> all zero.
    stat = pq_single_image(gt, [seg(1, 1)], half, [seg(7, 1)], CATEGORIES)
    assert stat[1] == CategoryStat(tp=0, fp=1, fn=1, iou=0.0)
    assert scores(stat) == approx(0.0, 0.0, 0.0, 1)
    # one more pixel: IoU = 3 / (3 + 4 - 3) = 0.75, a match -> PQ = SQ = 0.75, RQ = 1.
    above_half = grid("""
    7 7 7 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0""")
    stat = pq_single_image(gt, [seg(1, 1)], above_half, [seg(7, 1)], CATEGORIES)
    assert scores(stat) == approx(0.75, 0.75, 1.0, 1)


def test_prediction_pixels_over_void_leave_the_union():
    gt = grid("""
    1 1 1 1 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0""")
    # pred 7: 4 px on gt 1 + 4 px on VOID: union = 8 + 4 - 4 - 4 = 4 -> IoU 1 (4/8 = 0.5, no match, without the rule).
    # pred 8 (car) lies wholly on VOID: ignored, not a FP, so car has tp + fp + fn = 0 and is not averaged.
    pred = grid("""
    7 7 7 7 0 0
    7 7 7 7 0 0
    0 0 0 0 0 0
    0 0 0 0 8 8""")
    stat = pq_single_image(gt, [seg(1, 1)], pred, [seg(7, 1), seg(8, 2)], CATEGORIES)
    assert stat[2] == CategoryStat()
    assert scores(stat) == approx(1.0, 1.0, 1.0, 1)


def test_prediction_mostly_on_void_is_not_a_false_positive():
    gt = grid("""
    1 1 1 1 1 1
    0 0 0 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0""")
    # pred 9 (car): 1 px on gt 1 + 3 px on VOID -> 3/4 > 0.5 of it is VOID: ignored. gt 1 (person) is a FN.
    pred = grid("""
    9 0 0 0 0 0
    9 9 9 0 0 0
    0 0 0 0 0 0
    0 0 0 0 0 0""")
    stat = pq_single_image(gt, [seg(1, 1)], pred, [seg(9, 2)], CATEGORIES)
    assert stat[2] == CategoryStat()
    assert stat[1] == CategoryStat(fn=1)
    assert scores(stat) == approx(0.0, 0.0, 0.0, 1)


CROWD_GT = grid("""
1 1 1 2 2 2
1 1 1 2 2 2
1 1 1 2 2 2
0 0 0 0 0 0""")
CROWD_GT_SEGMENTS = [seg(1, 1, iscrowd=1), seg(2, 1)]  # a person crowd region and one person


def test_crowd_never_matches_nor_counts_as_false_negative():
    # pred 5 covers the crowd exactly: no match (crowd is skipped), and 9/9 of it is crowd of its own category,
    # so no FP either. pred 6 = gt 2: a TP at IoU 1. Person: tp 1 -> PQ 1; the crowd adds no FN.
    pred = grid("""
    5 5 5 6 6 6
    5 5 5 6 6 6
    5 5 5 6 6 6
    0 0 0 0 0 0""")
    stat = pq_single_image(CROWD_GT, CROWD_GT_SEGMENTS, pred, [seg(5, 1), seg(6, 1)], CATEGORIES)
    assert stat[1] == CategoryStat(tp=1, iou=1.0)
    # the same pixels predicted as car: the person crowd forgives only persons -> car fp 1, PQ_car 0;
    # All = (1 + 0) / 2 = 0.5, SQ = (1 + 0) / 2, RQ = (1 + 0) / 2.
    stat = pq_single_image(CROWD_GT, CROWD_GT_SEGMENTS, pred, [seg(5, 2), seg(6, 1)], CATEGORIES)
    assert stat[2] == CategoryStat(fp=1)
    assert scores(stat) == approx(0.5, 0.5, 0.5, 2)


def test_void_and_crowd_add_up_when_forgiving_a_prediction():
    # pred 5 (4 px): 1 px crowd + 1 px gt 2 + 2 px VOID -> (1 + 2) / 4 = 0.75 > 0.5: ignored (VOID alone: 0.5).
    # pred 6 (8 px) lies on gt 2 (9 px): IoU = 8 / (8 + 9 - 8 - 0) = 8/9. Person: PQ = SQ = 8/9, RQ = 1.
    pred = grid("""
    0 0 0 6 6 6
    0 0 0 6 6 6
    0 0 5 5 6 6
    0 0 5 5 0 0""")
    stat = pq_single_image(CROWD_GT, CROWD_GT_SEGMENTS, pred, [seg(5, 1), seg(6, 1)], CATEGORIES)
    assert scores(stat) == approx(8 / 9, 8 / 9, 1.0, 1)
    # as a car, only VOID forgives it: 2/4 = 0.5 is not > 0.5 -> a car FP. All = (8/9 + 0) / 2, RQ = (1 + 0) / 2.
    stat = pq_single_image(CROWD_GT, CROWD_GT_SEGMENTS, pred, [seg(5, 2), seg(6, 1)], CATEGORIES)
    assert stat[2] == CategoryStat(fp=1)
    assert scores(stat) == approx(4 / 9, 4 / 9, 0.5, 2)


def test_things_and_stuff_are_averaged_separately():
    stat = tp_fp_fn_stat()
    stat += stuff_stat()
    # Things: person only (0.3, 0.6, 0.5). Stuff: sky 0.8, grass 0.75, both RQ 1 -> (0.775, 0.775, 1).
    # All: PQ (0.3 + 0.8 + 0.75) / 3, SQ (0.6 + 0.8 + 0.75) / 3, RQ (0.5 + 1 + 1) / 3; dog and car not averaged.
    assert scores(stat, True) == approx(0.3, 0.6, 0.5, 1)
    assert scores(stat, False) == approx(0.775, 0.775, 1.0, 2)
    assert scores(stat) == approx(1.85 / 3, 2.15 / 3, 2.5 / 3, 3)
    per_class = pq_per_class(stat, CATEGORIES)
    assert per_class[3] == {"pq": pytest.approx(0.8), "sq": pytest.approx(0.8), "rq": 1.0}
    assert per_class[5] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # absent from both: zeros, as panopticapi


def test_stat_merge_sums_counts_and_an_empty_average_is_zero():
    stat = PQStat()
    stat += tp_fp_fn_stat()
    stat += tp_fp_fn_stat()
    assert stat[1] == CategoryStat(tp=2, fp=2, fn=2, iou=pytest.approx(1.2))
    assert scores(stat) == approx(0.3, 0.6, 0.5, 1)  # PQ = 1.2 / (2 + 1 + 1)
    assert scores(stat, False) == (0.0, 0.0, 0.0, 0)  # no stuff category present (panopticapi: ZeroDivisionError)


# --- file format ---------------------------------------------------------------------------------------------

def test_rgb_id_round_trip():
    ids = np.random.default_rng(0).integers(0, 256**3, size=(5, 7))
    ids[0, :3] = [0, 256**3 - 1, 1 + 256 * 2 + 256 * 256 * 3]
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    assert rgb[0, 2].tolist() == [1, 2, 3]  # R + 256 G + 256^2 B
    assert rgb_to_id(rgb).dtype == np.int64
    np.testing.assert_array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    with pytest.raises(ValueError, match="must lie in"):
        id_to_rgb(np.array([[256**3]]))


def test_png_round_trip_leaves_no_temp_file(tmp_path):
    ids = np.array([[0, 1, 255], [256, 65536, 256**3 - 1]])
    write_panoptic_png(tmp_path / "a.png", torch.from_numpy(ids))
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "a.png"), ids)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    Image.fromarray(np.zeros((2, 2, 4), np.uint8)).save(tmp_path / "rgba.png")
    with pytest.raises(ValueError, match="RGBA PNG"):
        read_panoptic_png(tmp_path / "rgba.png")


def test_to_coco_panoptic_maps_categories_and_measures_segments():
    panoptic_seg = torch.tensor([[1, 1, 2, 0],
                                 [1, 0, 2, 2],
                                 [0, 0, 0, 2]], dtype=torch.int32)
    segments_info = [{"id": 1, "isthing": True, "category_id": 1, "score": 0.9, "instance_id": 0},
                     {"id": 2, "isthing": False, "category_id": 2, "area": 4},
                     {"id": 3, "isthing": True, "category_id": 0, "score": 0.4, "instance_id": 1}]  # no pixel left
    mapping = separated_category_mapping(THINGS, STUFF)
    assert mapping == {(True, 0): 1, (True, 1): 2, (True, 2): 5, (False, 1): 3, (False, 2): 4}
    record, ids = to_coco_panoptic(panoptic_seg, segments_info, 42, "42.png", mapping)
    assert record == {"image_id": 42, "file_name": "42.png", "segments_info": [
        {"id": 1, "category_id": 2, "iscrowd": 0, "area": 3, "bbox": [0, 0, 2, 2]},
        {"id": 2, "category_id": 4, "iscrowd": 0, "area": 4, "bbox": [2, 0, 2, 3]}]}
    np.testing.assert_array_equal(ids, panoptic_seg.numpy())
    record, _ = to_coco_panoptic(panoptic_seg, segments_info, 42, "42.png", lambda isthing, c: 100 * isthing + c)
    assert [s["category_id"] for s in record["segments_info"]] == [101, 2]
    dataset_ids = [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 8}]  # no "isthing": already dataset ids
    record, _ = to_coco_panoptic(panoptic_seg, dataset_ids, 42, "42.png", mapping)
    assert [s["category_id"] for s in record["segments_info"]] == [7, 8]


@pytest.mark.parametrize(("segments_info", "match"), [
    ([{"id": 1, "isthing": True, "category_id": 0}], r"segment ids \[2\] that segments_info does not list"),
    ([{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": False, "category_id": 0}],
     r"no dataset category for \(isthing=False, contiguous id 0\)"),
    ([{"id": 0, "isthing": True, "category_id": 0}, {"id": 1, "isthing": True, "category_id": 0},
      {"id": 2, "isthing": True, "category_id": 0}], "lists id 0, which is VOID"),
])
def test_to_coco_panoptic_errors(segments_info, match):
    with pytest.raises(ValueError, match=match) as err:
        to_coco_panoptic(torch.tensor([[1, 2]]), segments_info, 7, "7.png", separated_category_mapping(THINGS, STUFF))
    assert "\n" not in str(err.value)


def write_dataset(root, images, predictions):
    """``images``: [(image_id, gt ids, gt segments)]; ``predictions``: [(image_id, pred ids, pred segments)]."""
    (root / "gt").mkdir()
    (root / "pred").mkdir()
    gt_annotations = []
    for image_id, ids, segments in images:
        write_panoptic_png(root / "gt" / f"{image_id}.png", ids)
        areas = {s["id"]: int((ids == s["id"]).sum()) for s in segments}
        gt_annotations.append({"image_id": image_id, "file_name": f"{image_id}.png",
                               "segments_info": [{**s, "area": areas[s["id"]]} for s in segments]})
    write_predictions_json(root / "gt.json", gt_annotations, CATEGORIES)
    pred_annotations = []
    for image_id, ids, segments in predictions:
        write_panoptic_png(root / "pred" / f"{image_id}.png", ids)
        pred_annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
    write_predictions_json(root / "pred.json", pred_annotations, CATEGORIES)
    return root / "gt.json", root / "pred.json"


def test_detectron2_output_through_files_scores_as_by_hand(tmp_path):
    # image 1: the TP/FP/FN things layout; image 2: the sky/grass stuff layout; predictions in detectron2's
    # PanopticFPN form (contiguous ids), converted by to_coco_panoptic and written as PNG + json.
    mapping = separated_category_mapping(THINGS, STUFF)
    thing_output = [{"id": 5, "isthing": True, "category_id": 0, "score": 0.9, "instance_id": 0},
                    {"id": 6, "isthing": True, "category_id": 0, "score": 0.8, "instance_id": 1}]
    stuff_output = [{"id": 1, "isthing": False, "category_id": 1, "area": 15},
                    {"id": 2, "isthing": False, "category_id": 2, "area": 9}]
    predictions = []
    for image_id, ids, output in ((1, TP_FP_FN_PRED, thing_output), (2, STUFF_PRED, stuff_output)):
        record, id_map = to_coco_panoptic(torch.from_numpy(ids), output, image_id, f"{image_id}.png", mapping)
        predictions.append((image_id, id_map, record["segments_info"]))
    gt_json, pred_json = write_dataset(tmp_path, [(1, TP_FP_FN_GT, TP_FP_FN_SEGMENTS[0]),
                                                  (2, STUFF_GT, STUFF_SEGMENTS[0])], predictions)
    results = pq_compute(gt_json, pred_json, progress=False)  # folders default to gt/ and pred/
    assert results["Things"] == {"pq": pytest.approx(0.3), "sq": pytest.approx(0.6), "rq": 0.5, "n": 1}
    assert results["Stuff"] == {"pq": pytest.approx(0.775), "sq": pytest.approx(0.775), "rq": 1.0, "n": 2}
    assert (results["All"]["pq"], results["All"]["sq"], results["All"]["rq"]) == approx(1.85 / 3, 2.15 / 3, 2.5 / 3)
    assert results["per_class"][1] == {"pq": pytest.approx(0.3), "sq": pytest.approx(0.6), "rq": 0.5}
    assert sorted(results["per_class"]) == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "gt.json", "pred", "pred.json"]  # no temp files


SIMPLE_GT = grid("""
1 1 1 2 2 2
1 1 1 2 2 2
1 1 1 2 2 2
1 1 1 2 2 2""")


def simple_dataset(tmp_path):
    return write_dataset(tmp_path, [(1, SIMPLE_GT, [seg(1, 1), seg(2, 3)])],
                         [(1, SIMPLE_GT, [seg(1, 1), seg(2, 3)])])


def edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_simple_dataset_is_valid(tmp_path):
    results = pq_compute(*simple_dataset(tmp_path), progress=False)
    assert results["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}


@pytest.mark.parametrize(("breakage", "match"), [
    ("missing_pred_png", r"predicted PNG .*1\.png for image 1 is missing; write it or fix file_name in .*pred\.json"),
    ("missing_gt_png", r"ground-truth PNG .*1\.png for image 1 is missing"),
    ("png_id_not_in_json", r"image 1 \(.*1\.png, pred\.json\): segment ids \[2\] are in the PNG but not in "
                           "segments_info"),
    ("json_id_not_in_png", r"segments_info lists ids \[9\] that have no pixel in the PNG; drop them"),
    ("unknown_category", r"category ids \[99\] are not among the ground truth's categories"),
    ("missing_prediction", r"pred\.json has no prediction for 1 of the 2 images of .*gt\.json \(e\.g\. image ids "
                           r"\[2\]\)"),
    ("duplicate_prediction", r"pred\.json holds two predictions for image 1"),
    ("missing_folder", r"folder .*pred with the predicted PNGs does not exist; pass its path as pred_folder"),
    ("wrong_size", r"prediction is 3x4 pixels but the ground truth is 6x4"),
    ("not_panoptic_json", r"predictions json .*pred\.json has no 'annotations' list"),
])
def test_malformed_input_raises_one_line_value_error(tmp_path, breakage, match):
    gt_json, pred_json = simple_dataset(tmp_path)
    pred_png = tmp_path / "pred" / "1.png"
    if breakage == "missing_pred_png":
        pred_png.unlink()
    elif breakage == "missing_gt_png":
        (tmp_path / "gt" / "1.png").unlink()
    elif breakage == "png_id_not_in_json":
        edit_json(pred_json, lambda d: d["annotations"][0]["segments_info"].pop())
    elif breakage == "json_id_not_in_png":
        edit_json(pred_json, lambda d: d["annotations"][0]["segments_info"].append(seg(9, 1)))
    elif breakage == "unknown_category":
        edit_json(pred_json, lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99))
    elif breakage == "missing_prediction":
        edit_json(gt_json, lambda d: d["annotations"].append({**d["annotations"][0], "image_id": 2}))
    elif breakage == "duplicate_prediction":
        edit_json(pred_json, lambda d: d["annotations"].append(d["annotations"][0]))
    elif breakage == "missing_folder":
        pred_png.unlink()
        pred_png.parent.rmdir()
    elif breakage == "wrong_size":
        write_panoptic_png(pred_png, SIMPLE_GT[:, :3])
    elif breakage == "not_panoptic_json":
        edit_json(pred_json, lambda d: d.pop("annotations"))
    with pytest.raises(ValueError, match=match) as err:
        pq_compute(gt_json, pred_json, progress=False)
    assert "\n" not in str(err.value)
