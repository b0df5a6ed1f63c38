"""Published ResNeSt detection checkpoints: one row per released file (official detectron2 plug-in and mmdet).

Sources (read for this table):
- zhanghang1989/ResNeSt @1dfb3e8867e2ece1c28a65c9db1cded2818a2031: ``d2/README.md`` (tables "Object Detection" and
  "Instance Segmentation": backbone, mAP, config / model / log links) and every ResNeSt config it links under
  ``d2/configs/`` (plus ``d2/configs/Base-RCNN-FPN.yaml``, ``d2/configs/ResNest-Base-RCNN-FPN.yaml`` and
  ``resnest/d2/config.py`` for defaults). Local copy: ``/work/shared/oracles/ResNeSt``.
- open-mmlab/mmdetection ``configs/resnest/metafile.yml`` @0c9092ff5a07f0614f970fe1b7094896379af25a (weights URLs,
  box / mask AP) and ``configs/resnest/README.md`` @01a796246d5f3d42d3d1338653e65cfc3e6bd49e (same figures and URLs).
  The mmdet configs (v2 names, renamed in mmdet 3.x) were read at: faster_rcnn_s50 @5070ca9d, faster_rcnn_s101
  @11f3ca2b, mask_rcnn_s50 @58c9a860, mask_rcnn_s101 @5cae326a, cascade_rcnn_s50 @1a81f89d, cascade_rcnn_s101
  @5070ca9d, cascade_mask_rcnn_s50 @1a81f89d, cascade_mask_rcnn_s101 @0f359e06; their bases
  ``configs/_base_/models/mask_rcnn_r50_fpn.py`` (FCNMaskHead num_convs=4) and ``cascade_mask_rcnn_r50_fpn.py``, and
  ``mmdet/models/roi_heads/cascade_roi_head.py`` ``init_mask_head`` (one mask head per stage when given one dict).
  (The whole-repository snapshot was too large to fetch; files were read one by one from the stored index.)
- ``/work/shared/spec/paper-facts.md`` §8.1 (detection protocol and the same d2 figures).

Scope: ResNeSt backbones only: box, instance-segmentation and panoptic detectors, with and without DCN.
- Left out on purpose: the ResNet-50/101 baselines of the d2 README (our backbone zoo covers ResNeSt; the baselines
  are MSRA-style ResNets with STRIDE_IN_1X1 True).
- DCN rows (``deformable``): DEFORM_ON_PER_STAGE [False, True, True, True], DEFORM_MODULATED True,
  DEFORM_NUM_GROUPS 2 (their configs), i.e. ``deform_stages=(2, 3, 4), deform_groups=2``.
- The panoptic row: ``COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x.yaml`` on
  ``ResNeSt-Base-Panoptic-FPN.yaml`` (META_ARCHITECTURE PanopticFPN, SEM_SEG_HEAD LOSS_WEIGHT 0.5, NORM SyncBN;
  ROI_MASK_HEAD keeps detectron2's defaults NUM_CONV 4 and NORM "", i.e. no norm; SEM_SEG_HEAD NUM_CLASSES default
  54; PANOPTIC_FPN.COMBINE defaults 0.5 / 4096 / 0.5), README table "Panoptic Segmentation" (bbox 51.00, mask 43.68,
  PQ 47.90); its config sets TEST.AUG ENABLED True, which detectron2's TTA cannot apply to PanopticFPN.

Facts shared by every row (not repeated per row):
- COCO-2017, 80 classes (detectron2 default ROI_HEADS.NUM_CLASSES 80; mmdet ``num_classes=80``); FPN; SyncBN in the
  backbone, FPN (d2) and heads; box head 4conv1fc with SyncBN (d2 ``FastRCNNConvFCHead NUM_CONV 4 NUM_FC 1``, mmdet
  ``Shared4Conv1FCBBoxHead conv_out_channels=256``); RGB input, mean [123.68, 116.779, 103.939], std
  [58.393, 57.12, 57.375]; 1x = 90k iterations (d2) / 12 epochs (mmdet) unless a row says otherwise.
- ResNeSt backbone settings: radix 2, deep stem (widths 32/32/64 for S-50, 64/64/128 for S-101/200), avd, avg-down
  shortcut (d2 ``add_resnest_config``: DEEP_STEM, AVD, AVG_DOWN True, BOTTLENECK_WIDTH 64; mmdet ``stem_channels``
  64 / 128, ``avg_down_stride=True``, ``reduction_factor=4``); d2 FREEZE_AT 2 (default) / mmdet ``frozen_stages=1``.
- d2 configs set no INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, so detectron2's defaults 800 / 1333 apply; where they set
  no MAX_SIZE_TRAIN the default 1333 applies. mmdet test pipeline: ``img_scale=(1333, 800)``, no flip.
- d2 ``CascadeROIHeads`` has a single mask head (applied after the last stage); mmdet ``CascadeRoIHead`` builds one
  mask head per stage (three), so the two layouts' cascade-mask checkpoints differ in structure, not only in names.
- Hash prefixes: mmdet's publish script appends ``sha256sum[:8]`` (tools/model_converters/publish_model.py); the
  official d2 filenames follow the torch.hub ``-<sha256[:8]>.pth`` convention of ResNeSt's ImageNet weights, but no
  d2 code checks them, so the algorithm there is assumed, not confirmed; verify on download.
- mmdet URLs are kept exactly as published, with ``+`` written ``%2B``; ``filename`` holds the decoded file name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectionCheckpointRow:
    name: str  # our zoo name, e.g. "faster_rcnn_resnest50_fpn_d2"
    kind: str  # "faster_rcnn" | "mask_rcnn" | "cascade_rcnn" | "cascade_mask_rcnn"
    backbone: str  # "resnest50" | "resnest101" | "resnest200"
    layout: str  # "detectron2" | "mmdet"
    filename: str  # the file name as published (hash inside, when there is one)
    sha256_prefix: str | None  # the 8 hex digits in the filename, None when the filename carries none
    urls: tuple[str, ...]
    box_ap: float | None
    mask_ap: float | None
    ap_source: str  # where the AP figure is printed (file + repo + commit)
    config: str  # upstream config path
    train_sizes: tuple[int, int]  # (min, max) short side
    train_sampling: str  # "range": any integer in [min, max]; "choice": one of min, min + 32, ..., max
    train_max_size: int
    test_size: int
    test_max_size: int
    mask_head_convs: int | None  # None for box-only models
    notes: str = ""
    deformable: bool = False  # DCNv2 on res3-res5 with 2 deformable groups (the plug-in's DCN configs)
    pq: float | None = None  # panoptic quality, for the panoptic row


_D2_ROOT = "https://s3.us-west-1.wasabisys.com/resnest/detectron/"
_MMDET_ROOT = "https://download.openmmlab.com/mmdetection/v2.0/resnest/"

_D2_DET_AP = (
    "zhanghang1989/ResNeSt d2/README.md @1dfb3e8, table 'Object Detection' (COCO-2017 val, single scale); "
    "same figures in paper-facts.md §8.1"
)
_D2_SEG_AP = (
    "zhanghang1989/ResNeSt d2/README.md @1dfb3e8, table 'Instance Segmentation' (COCO-2017 val, single scale); "
    "same figures in paper-facts.md §8.1"
)
_D2_PANOPTIC_AP = (
    "zhanghang1989/ResNeSt d2/README.md @1dfb3e8, table 'Panoptic Segmentation' (COCO-2017 val). Its config sets "
    "TEST.AUG.ENABLED, but detectron2's GeneralizedRCNNWithTTA cannot run PanopticFPN (PanopticFPN.inference takes "
    "no given instances; detectron2 @02b5c4e read), so the PQ is not a TTA figure; whether train_net's separate TTA "
    "pass fed the box / mask APs is not known; paper-facts.md §8.1 lists PQ 47.9, PQth 55.1, PQst 37.0"
)
_MMDET_AP = (
    "open-mmlab/mmdetection configs/resnest/metafile.yml @0c9092ff (same figures in configs/resnest/README.md "
    "@01a79624); dataset 'COCO' (val2017 by mmdet convention, single scale)"
)

_D2_DET_NOTES = (
    "d2 detection protocol: short side range-sampled in [640, 800] (MIN_SIZE_TRAIN_SAMPLING 'range'), max 1333; "
    "1x (90k iters, steps 60k/80k), 16 img/batch, lr 0.02; TEST.PRECISE_BN on; STRIDE_IN_1X1 False"
)
_D2_SEG_NOTES = (
    "d2 instance-seg protocol: short side chosen from (640, 672, 704, 736, 768, 800) (detectron2 default sampling "
    "'choice', from Base-RCNN-FPN.yaml), max 1333 (default); 1x (90k iters, steps 60k/80k), 16 img/batch, lr 0.02; "
    "mask head SyncBN; TEST.PRECISE_BN on; STRIDE_IN_1X1 False"
)
_D2_CASCADE_NOTES = "CascadeROIHeads, CLS_AGNOSTIC_BBOX_REG True, RPN POST_NMS_TOPK_TRAIN 2000"
_D2_STD_NOTES = "class-specific box regression (CLS_AGNOSTIC_BBOX_REG default False), RPN POST_NMS_TOPK_TRAIN 1000"

_MMDET_RANGE_NOTES = (
    "mmdet: Resize img_scale [(1333, 640), (1333, 800)] multiscale_mode 'range'; 12 epochs; SyncBN backbone+head "
    "(norm_eval False); backbone init open-mmlab://resnest{depth}"
)
_MMDET_VALUE_NOTES = (
    "mmdet: Resize img_scale (1333, 640|672|704|736|768|800) multiscale_mode 'value'; 12 epochs; SyncBN "
    "backbone+head (norm_eval False), FCNMaskHead num_convs 4 with SyncBN; backbone init open-mmlab://resnest{depth}"
)
_MMDET_CASCADE_NOTES = "three Shared4Conv1FCBBoxHead stages with SyncBN, reg_class_agnostic True"


def _d2_url(filename: str) -> str:
    return _D2_ROOT + filename


def _mmdet_url(config_stem: str, filename: str) -> str:
    # download.openmmlab.com layout <root>/<config stem>/<file>; the metafile writes '+' as %2B.
    return f"{_MMDET_ROOT}{config_stem}/{filename}".replace("+", "%2B")


def _d2_row(
    name: str,
    kind: str,
    backbone: str,
    filename: str,
    sha256_prefix: str | None,
    box_ap: float,
    mask_ap: float | None,
    config: str,
    notes: str,
    *,
    train_sizes: tuple[int, int] = (640, 800),
    train_max_size: int = 1333,
    mask_head_convs: int | None = None,
    **extra,
) -> DetectionCheckpointRow:
    return DetectionCheckpointRow(
        name=name,
        kind=kind,
        backbone=backbone,
        layout="detectron2",
        filename=filename,
        sha256_prefix=sha256_prefix,
        urls=(_d2_url(filename),),
        box_ap=box_ap,
        mask_ap=mask_ap,
        ap_source=_D2_PANOPTIC_AP if kind.endswith("panoptic_fpn") else
        _D2_SEG_AP if kind.endswith("mask_rcnn") else _D2_DET_AP,
        config=config,
        train_sizes=train_sizes,
        # the instance-segmentation configs keep Base-RCNN-FPN.yaml's (640, 672, ..., 800) "choice" sampling
        train_sampling="choice" if kind.endswith("mask_rcnn") and train_sizes == (640, 800) else "range",
        train_max_size=train_max_size,
        test_size=800,
        test_max_size=1333,
        mask_head_convs=mask_head_convs,
        notes=notes,
        **extra,
    )


def _mmdet_row(
    name: str,
    kind: str,
    backbone: str,
    config_stem: str,
    filename: str,
    sha256_prefix: str,
    box_ap: float,
    mask_ap: float | None,
    notes: str,
) -> DetectionCheckpointRow:
    masked = kind.endswith("mask_rcnn")
    return DetectionCheckpointRow(
        name=name,
        kind=kind,
        backbone=backbone,
        layout="mmdet",
        filename=filename,
        sha256_prefix=sha256_prefix,
        urls=(_mmdet_url(config_stem, filename),),
        box_ap=box_ap,
        mask_ap=mask_ap,
        ap_source=_MMDET_AP,
        config=f"configs/resnest/{config_stem}.py",
        train_sizes=(640, 800),
        train_sampling="choice" if masked else "range",  # mmdet multiscale_mode 'value' / 'range'
        train_max_size=1333,
        test_size=800,
        test_max_size=1333,
        mask_head_convs=4 if masked else None,
        notes=notes,
    )


DETECTION_CHECKPOINTS: tuple[DetectionCheckpointRow, ...] = (
    # ---- official detectron2 plug-in (zhanghang1989/ResNeSt d2/README.md), "Object Detection" table ----
    _d2_row(
        "faster_rcnn_resnest50_fpn_d2",
        "faster_rcnn",
        "resnest50",
        "faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x-ad123c0b.pth",
        "ad123c0b",
        42.33,
        None,
        "d2/configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml",
        f"{_D2_DET_NOTES}; {_D2_STD_NOTES}; init resnest50_detectron-255b5649.pth",
    ),
    _d2_row(
        "faster_rcnn_resnest101_fpn_d2",
        "faster_rcnn",
        "resnest101",
        "faster_rcnn_ResNeSt_101_FPN_syncbn_range-scale_1x-d8f284b6.pth",
        "d8f284b6",
        44.72,
        None,
        "d2/configs/COCO-Detection/faster_rcnn_ResNeSt_101_FPN_syncbn_range-scale_1x.yaml",
        f"{_D2_DET_NOTES}; {_D2_STD_NOTES}; init resnest101_detectron-486f69a8.pth",
    ),
    _d2_row(
        "cascade_rcnn_resnest50_fpn_d2",
        "cascade_rcnn",
        "resnest50",
        "faster_cascade_rcnn_ResNeSt_50_FPN_syncbn_range-scale-1x-e9955232.pth",
        "e9955232",
        45.41,
        None,
        "d2/configs/COCO-Detection/faster_cascade_rcnn_ResNeSt_50_FPN_syncbn_range-scale-1x.yaml",
        f"{_D2_DET_NOTES}; {_D2_CASCADE_NOTES}; init resnest50_detectron-255b5649.pth; upstream spells this one "
        "'range-scale-1x' (hyphen) where the others say 'range-scale_1x'",
    ),
    _d2_row(
        "cascade_rcnn_resnest101_fpn_d2",
        "cascade_rcnn",
        "resnest101",
        "faster_cascade_rcnn_ResNeSt_101_FPN_syncbn_range-scale_1x-3627ef78.pth",
        "3627ef78",
        47.50,
        None,
        "d2/configs/COCO-Detection/faster_cascade_rcnn_ResNeSt_101_FPN_syncbn_range-scale_1x.yaml",
        f"{_D2_DET_NOTES}; {_D2_CASCADE_NOTES}; init resnest101_detectron-486f69a8.pth",
    ),
    _d2_row(
        "cascade_rcnn_resnest200_fpn_d2",
        "cascade_rcnn",
        "resnest200",
        "faster_cascade_rcnn_ResNeSt_200_FPN_syncbn_range-scale_1x-1be2a87e.pth",
        "1be2a87e",
        49.03,
        None,
        "d2/configs/COCO-Detection/faster_cascade_rcnn_ResNeSt_200_FPN_syncbn_range-scale_1x.yaml",
        f"{_D2_DET_NOTES}; {_D2_CASCADE_NOTES}; init resnest200_detectron-02644020.pth",
    ),
    # ---- official detectron2 plug-in, "Instance Segmentation" table (its "Cascade R-CNN" rows are Cascade Mask) ----
    _d2_row(
        "mask_rcnn_resnest50_fpn_d2",
        "mask_rcnn",
        "resnest50",
        "mask_rcnn_ResNeSt_50_FPN_syncBN_1x-f442d863.pth",
        "f442d863",
        42.81,
        38.14,
        "d2/configs/COCO-InstanceSegmentation/mask_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
        f"{_D2_SEG_NOTES}; {_D2_STD_NOTES}; init resnest50_detectron-255b5649.pth",
        mask_head_convs=4,
    ),
    _d2_row(
        "mask_rcnn_resnest101_fpn_d2",
        "mask_rcnn",
        "resnest101",
        "mask_rcnn_ResNeSt_101_FPN_syncBN_1x-528502c6.pth",
        "528502c6",
        45.75,
        40.65,
        "d2/configs/COCO-InstanceSegmentation/mask_rcnn_ResNeSt_101_FPN_syncBN_1x.yaml",
        f"{_D2_SEG_NOTES}; {_D2_STD_NOTES}; init resnest101_detectron-486f69a8.pth",
        mask_head_convs=4,
    ),
    _d2_row(
        "cascade_mask_rcnn_resnest50_fpn_d2",
        "cascade_mask_rcnn",
        "resnest50",
        "mask_cascade_rcnn_ResNeSt_50_FPN_syncBN_1x-c58bd325.pth",
        "c58bd325",
        46.19,
        39.55,
        "d2/configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
        f"{_D2_SEG_NOTES}; {_D2_CASCADE_NOTES}; one mask head; init resnest50_detectron-255b5649.pth",
        mask_head_convs=4,
    ),
    _d2_row(
        "cascade_mask_rcnn_resnest101_fpn_d2",
        "cascade_mask_rcnn",
        "resnest101",
        "mask_cascade_rcnn_ResNeSt_101_FPN_syncBN_1x-62448b9c.pth",
        "62448b9c",
        48.30,
        41.56,
        "d2/configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_101_FPN_syncBN_1x.yaml",
        f"{_D2_SEG_NOTES}; {_D2_CASCADE_NOTES}; one mask head; init resnest101_detectron-486f69a8.pth",
        mask_head_convs=4,
    ),
    _d2_row(
        "cascade_mask_rcnn_resnest200_fpn_tricks_d2",
        "cascade_mask_rcnn",
        "resnest200",
        "mask_cascade_rcnn_ResNeSt_200_FPN_syncBN_all_tricks_3x.pth",
        None,
        50.54,
        44.21,
        "d2/configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_200_FPN_syncBN_all_tricks_3x.yaml",
        "README row 'ResNeSt-200-tricks-3x'; the published filename carries NO hash (sha256_prefix None), so it "
        "cannot be hash-checked; trained with tricks: 8-conv mask head (ROI_MASK_HEAD NUM_CONV 8, SyncBN), short "
        "side range-sampled in [640, 864] (MIN_SIZE_TRAIN_SAMPLING 'range'), MAX_SIZE_TRAIN 1440, INPUT.CROP "
        "enabled (detectron2 default crop type/size), 3x schedule (270k iters, steps 240k/255k), 16 img/batch, "
        f"lr 0.02; test size not set (defaults 800/1333); {_D2_CASCADE_NOTES}; one mask head; TEST.PRECISE_BN on; "
        "no DCN; init resnest200_detectron-02644020.pth",
        train_sizes=(640, 864),
        train_max_size=1440,
        mask_head_convs=8,
    ),
    # ---- the plug-in's DCN rows (same tables) and its panoptic row ----
    _d2_row(
        "faster_rcnn_resnest50_dcn_fpn_d2",
        "faster_rcnn",
        "resnest50",
        "faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.pth",
        None,
        44.11,
        None,
        "d2/configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.yaml",
        f"README row 'ResNeSt-50-DCNv2'; the published filename carries NO hash (sha256_prefix None); {_D2_DET_NOTES}; "
        f"{_D2_STD_NOTES}; modulated DCNv2 on res3-res5, 2 deformable groups; init resnest50_detectron-255b5649.pth",
        deformable=True,
    ),
    _d2_row(
        "cascade_mask_rcnn_resnest200_dcn_fpn_tricks_d2",
        "cascade_mask_rcnn",
        "resnest200",
        "mask_cascade_rcnn_ResNeSt_200_FPN_dcn_syncBN_all_tricks_3x-e1901134.pth",
        "e1901134",
        50.91,
        44.50,
        "d2/configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_200_FPN_dcn_syncBN_all_tricks_3x.yaml",
        "README row 'ResNeSt-200-dcn-tricks-3x' (val, single scale; 53.30 box / 47.10 mask on test-dev2019 with "
        "multi-scale testing); the tricks of the row above plus modulated DCNv2 on res3-res5, 2 deformable groups; "
        f"8-conv SyncBN mask head; {_D2_CASCADE_NOTES}; one mask head; TEST.AUG ENABLED False in the config; "
        "TEST.PRECISE_BN on; init resnest200_detectron-02644020.pth",
        train_sizes=(640, 864),
        train_max_size=1440,
        mask_head_convs=8,
        deformable=True,
    ),
    _d2_row(
        "cascade_panoptic_fpn_resnest200_fpn_tricks_d2",
        "cascade_panoptic_fpn",
        "resnest200",
        "panoptic_ResNeSt_200_FPN_syncBN_tricks_3x-43f8b731.pth",
        "43f8b731",
        51.00,
        43.68,
        "d2/configs/COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x.yaml",
        "README table 'Panoptic Segmentation' (bbox 51.00, mask 43.68, PQ 47.90); PanopticFPN with a cascade "
        f"instance branch ({_D2_CASCADE_NOTES}); 4conv1fc SyncBN box head, 4-conv mask head without norm, SyncBN "
        "semantic head (loss weight 0.5); short side range-sampled in [400, 1000], MAX_SIZE_TRAIN 1440; 3x (270k "
        "iters, steps 240k/255k); TEST.AUG ENABLED True (without effect on PanopticFPN); TEST.PRECISE_BN on; no DCN; "
        "init resnest200_detectron-02644020.pth",
        train_sizes=(400, 1000),
        train_max_size=1440,
        mask_head_convs=4,
        pq=47.90,
    ),
    # ---- mmdetection (open-mmlab/mmdetection configs/resnest/metafile.yml) ----
    _mmdet_row(
        "faster_rcnn_resnest50_fpn_mmdet",
        "faster_rcnn",
        "resnest50",
        "faster_rcnn_s50_fpn_syncbn-backbone+head_mstrain-range_1x_coco",
        "faster_rcnn_s50_fpn_syncbn-backbone+head_mstrain-range_1x_coco_20200926_125502-20289c16.pth",
        "20289c16",
        42.0,
        None,
        f"{_MMDET_RANGE_NOTES.format(depth=50)}; class-specific box regression",
    ),
    _mmdet_row(
        "faster_rcnn_resnest101_fpn_mmdet",
        "faster_rcnn",
        "resnest101",
        "faster_rcnn_s101_fpn_syncbn-backbone+head_mstrain-range_1x_coco",
        "faster_rcnn_s101_fpn_syncbn-backbone+head_mstrain-range_1x_coco_20201006_021058-421517f1.pth",
        "421517f1",
        44.5,
        None,
        f"{_MMDET_RANGE_NOTES.format(depth=101)}; class-specific box regression",
    ),
    _mmdet_row(
        "mask_rcnn_resnest50_fpn_mmdet",
        "mask_rcnn",
        "resnest50",
        "mask_rcnn_s50_fpn_syncbn-backbone+head_mstrain_1x_coco",
        "mask_rcnn_s50_fpn_syncbn-backbone+head_mstrain_1x_coco_20200926_125503-8a2c3d47.pth",
        "8a2c3d47",
        42.6,
        38.1,
        f"{_MMDET_VALUE_NOTES.format(depth=50)}; class-specific box regression",
    ),
    _mmdet_row(
        "mask_rcnn_resnest101_fpn_mmdet",
        "mask_rcnn",
        "resnest101",
        "mask_rcnn_s101_fpn_syncbn-backbone+head_mstrain_1x_coco",
        "mask_rcnn_s101_fpn_syncbn-backbone+head_mstrain_1x_coco_20201005_215831-af60cdf9.pth",
        "af60cdf9",
        45.2,
        40.2,
        f"{_MMDET_VALUE_NOTES.format(depth=101)}; class-specific box regression",
    ),
    _mmdet_row(
        "cascade_rcnn_resnest50_fpn_mmdet",
        "cascade_rcnn",
        "resnest50",
        "cascade_rcnn_s50_fpn_syncbn-backbone+head_mstrain-range_1x_coco",
        "cascade_rcnn_s50_fpn_syncbn-backbone+head_mstrain-range_1x_coco_20201122_213640-763cc7b5.pth",
        "763cc7b5",
        44.5,
        None,
        f"{_MMDET_RANGE_NOTES.format(depth=50)}; {_MMDET_CASCADE_NOTES}; mmdet README's S-50/S-101 cascade_rcnn "
        "log links are swapped (each points at the other model's log); the model links are not",
    ),
    _mmdet_row(
        "cascade_rcnn_resnest101_fpn_mmdet",
        "cascade_rcnn",
        "resnest101",
        "cascade_rcnn_s101_fpn_syncbn-backbone+head_mstrain-range_1x_coco",
        "cascade_rcnn_s101_fpn_syncbn-backbone+head_mstrain-range_1x_coco_20201005_113242-b9459f8f.pth",
        "b9459f8f",
        46.8,
        None,
        f"{_MMDET_RANGE_NOTES.format(depth=101)}; {_MMDET_CASCADE_NOTES}; mmdet README's S-50/S-101 cascade_rcnn "
        "log links are swapped (each points at the other model's log); the model links are not",
    ),
    _mmdet_row(
        "cascade_mask_rcnn_resnest50_fpn_mmdet",
        "cascade_mask_rcnn",
        "resnest50",
        "cascade_mask_rcnn_s50_fpn_syncbn-backbone+head_mstrain_1x_coco",
        "cascade_mask_rcnn_s50_fpn_syncbn-backbone+head_mstrain_1x_coco_20201122_104428-99eca4c7.pth",
        "99eca4c7",
        45.4,
        39.5,
        f"{_MMDET_VALUE_NOTES.format(depth=50)}; {_MMDET_CASCADE_NOTES}; one 4-conv mask head per stage (three)",
    ),
    _mmdet_row(
        "cascade_mask_rcnn_resnest101_fpn_mmdet",
        "cascade_mask_rcnn",
        "resnest101",
        "cascade_mask_rcnn_s101_fpn_syncbn-backbone+head_mstrain_1x_coco",
        "cascade_mask_rcnn_s101_fpn_syncbn-backbone+head_mstrain_1x_coco_20201005_113243-42607475.pth",
        "42607475",
        47.7,
        41.4,
        f"{_MMDET_VALUE_NOTES.format(depth=101)}; {_MMDET_CASCADE_NOTES}; one 4-conv mask head per stage (three)",
    ),
)
