"""Published ResNeSt segmentation checkpoints: one row per released file (PyTorch-Encoding and mmsegmentation).

Sources (read for this table):
- PyTorch-Encoding, PyPI ``torch-encoding==1.2.1`` ``encoding/models/model_store.py`` (``_model_sha1``: the full SHA-1
  of each ``.pth``, the file name ``{name}-{sha1[:8]}``, the host ``https://s3.us-west-1.wasabisys.com/encoding`` and
  ``{repo_url}models/{file_name}.zip``: a zip holding the ``.pth``). Architectures: ``encoding/models/sseg/
  {deeplab,fcn}.py``, ``datasets/{ade20k,pcontext}.py`` (150 / 59 classes).
- pixAcc / mIoU: zhanghang1989/PyTorch-Encoding ``docs/source/model_zoo/segmentation.rst`` @02bd63a1 (ADE20K rows;
  Pascal Context ResNeSt-101 / 200) and zhanghang1989/ResNeSt ``README.md`` @73b43ba (its "Semantic Segmentation"
  table: the Pascal Context ResNeSt-50 FCN / DeepLab and ResNeSt-269 rows).
- Encoding's evaluation (``experiments/segmentation/test.py --eval`` with ``option.py`` defaults): MultiEvalModule,
  base size 520, crop 480, scales 0.5–1.75, flip; pixAcc / mIoU over the val set.
- mmsegmentation 1.2.2 ``configs/resnest/metafile.yaml`` (weights URLs, mIoU single-scale and ms+flip) and the
  configs it names (bases ``configs/_base_/models/{fcn,pspnet,deeplabv3,deeplabv3plus}_r50-d8.py``,
  ``_base_/datasets/{ade20k,cityscapes}.py``: test Resize to fit (2048, 512) / (2048, 1024) keeping the aspect ratio,
  whole-image inference; ms+flip = scale factors 0.5–1.75 and flip).
- Hash in the names: Encoding's 8 hex digits are the SHA-1 prefix of the extracted ``.pth`` (checked in full here);
  mmseg's are ``sha256sum[:8]`` of the file (mmcv ``tools/model_converters/publish_model.py``).

Not verified here (no network): that every host still serves its file, and the published figures on real data.
The older Encoding host ``https://hangzh.s3.amazonaws.com/encoding/models/`` is listed second; it served the first
ResNeSt files (April 2020) and may not hold the later ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentationCheckpointRow:
    name: str  # our zoo name, e.g. "deeplabv3_resnest50_ade20k_encoding"
    kind: str  # "deeplabv3" | "deeplabv3plus" | "fcn" | "pspnet"
    backbone: str  # "resnest50" | "resnest101" | "resnest200" | "resnest269"
    layout: str  # "encoding" | "mmseg": the flavour that builds it and the converter that reads it
    dataset: str  # "ade20k" | "pcontext" | "cityscapes"
    num_classes: int
    filename: str  # the .pth as published (Encoding: inside ``archive``)
    urls: tuple[str, ...]
    archive: str | None  # Encoding: the .zip name that holds ``filename``; None = the URL serves the .pth
    sha1: str | None  # Encoding: full SHA-1 of the .pth
    sha256_prefix: str | None  # mmseg: sha256[:8] of the .pth
    pixel_accuracy: float | None  # %, single figure as published (Encoding: multi-scale + flip)
    mean_iou: float  # %, as published (Encoding: multi-scale + flip; mmseg: single scale)
    mean_iou_ms: float | None  # %, mmseg's multi-scale + flip figure
    source: str  # where the figures are printed
    eval_protocol: str  # how the figures were measured
    config: str  # upstream config / training command
    # the published protocol as :func:`~.metrics.predict_logits` arguments (``segment eval --pretrained``)
    eval_options: tuple[tuple[str, object], ...] = ()


_ENCODING_HOSTS = ("https://s3.us-west-1.wasabisys.com/encoding/models/", "https://hangzh.s3.amazonaws.com/encoding/models/")
_ENCODING_DOCS = "zhanghang1989/PyTorch-Encoding docs/source/model_zoo/segmentation.rst @02bd63a1"
_RESNEST_README = "zhanghang1989/ResNeSt README.md @73b43ba (Semantic Segmentation)"
_ENCODING_EVAL = ("PyTorch-Encoding test.py --eval: MultiEvalModule, base 520, crop 480, scales "
                  "0.5/0.75/1.0/1.25/1.5/1.75, flip")
_MMSEG_ROOT = "https://download.openmmlab.com/mmsegmentation/v0.5/resnest/"
_MMSEG_SOURCE = "open-mmlab/mmsegmentation configs/resnest/metafile.yaml (v1.2.2)"
_MMSEG_EVAL = {"ade20k": "mmseg test: resize to fit (2048, 512), whole image; ms+flip: 0.5-1.75 x, flip",
               "cityscapes": "mmseg test: resize to fit (2048, 1024), whole image; ms+flip: 0.5-1.75 x, flip"}

_ENCODING_OPTIONS = (("scales", (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)), ("flip", True), ("base_size", 520),
                     ("crop_size", 480), ("resize_side", "long"), ("combine", "encoding"))
_MMSEG_FIT = {"ade20k": (2048, 512), "cityscapes": (2048, 1024)}

_DATASET_NAMES = {"ade": ("ade20k", 150), "pcontext": ("pcontext", 59)}


def _encoding_row(model: str, backbone: str, acronym: str, sha1: str, pix: float, miou: float,
                  source: str) -> SegmentationCheckpointRow:
    stem = f"{model}_{backbone}_{acronym}-{sha1[:8]}"
    dataset, classes = _DATASET_NAMES[acronym]
    kind = "deeplabv3" if model == "deeplab" else model
    return SegmentationCheckpointRow(
        name=f"{kind}_{backbone}_{dataset}_encoding", kind=kind, backbone=backbone, layout="encoding",
        dataset=dataset, num_classes=classes, filename=f"{stem}.pth",
        urls=tuple(f"{host}{stem}.zip" for host in _ENCODING_HOSTS), archive=f"{stem}.zip", sha1=sha1,
        sha256_prefix=None, pixel_accuracy=pix, mean_iou=miou, mean_iou_ms=None, source=source,
        eval_protocol=_ENCODING_EVAL,
        config=f"python train.py --dataset {dataset} --model {model} --aux --backbone {backbone}",
        eval_options=_ENCODING_OPTIONS)


def _mmseg_row(kind: str, dataset: str, config: str, folder: str, stamp: str, miou: float,
               miou_ms: float) -> SegmentationCheckpointRow:
    filename = f"{folder}_{stamp}.pth"
    classes = 150 if dataset == "ade20k" else 19
    return SegmentationCheckpointRow(
        name=f"{kind}_resnest101_{dataset}_mmseg", kind=kind, backbone="resnest101", layout="mmseg", dataset=dataset,
        num_classes=classes, filename=filename, urls=(f"{_MMSEG_ROOT}{folder}/{filename}",), archive=None,
        sha1=None, sha256_prefix=stamp.rsplit("-", 1)[1], pixel_accuracy=None, mean_iou=miou, mean_iou_ms=miou_ms,
        source=_MMSEG_SOURCE, eval_protocol=_MMSEG_EVAL[dataset], config=f"configs/resnest/{config}.py",
        eval_options=(("scales", (1.0,)), ("flip", False), ("fit", _MMSEG_FIT[dataset]), ("align_corners", False)))


SEGMENTATION_CHECKPOINTS: tuple[SegmentationCheckpointRow, ...] = (
    _encoding_row("fcn", "resnest50", "ade", "4aba491aaf8e4866a9c9981b210e3e3266ac1f2a", 80.18, 42.94, _ENCODING_DOCS),
    _encoding_row("deeplab", "resnest50", "ade", "2225f09d0f40b9a168d9091652194bc35ec2a5a9", 81.17, 45.12,
                  _ENCODING_DOCS),
    _encoding_row("deeplab", "resnest101", "ade", "06ca799c8cc148fe0fafb5b6d052052935aa3cc8", 82.07, 46.91,
                  _ENCODING_DOCS),
    _encoding_row("deeplab", "resnest200", "ade", "7b9e7d3e6f0e2c763c7d77cad14d306c0a31fe05", 82.45, 48.36,
                  _ENCODING_DOCS),
    _encoding_row("deeplab", "resnest269", "ade", "0074dd10a6e6696f6f521653fb98224e75955496", 82.62, 47.60,
                  _ENCODING_DOCS),
    _encoding_row("fcn", "resnest50", "pcontext", "77a2161deeb1564e8b9c41a4bb7a3f33998b00ad", 79.19, 51.98,
                  _RESNEST_README),
    _encoding_row("deeplab", "resnest50", "pcontext", "08dccbc4f4694baab631e037a374d76d8108c61f", 80.41, 53.19,
                  _RESNEST_README),
    _encoding_row("deeplab", "resnest101", "pcontext", "faf5841853aae64bd965a7bdc2cdc6e7a2b5d898", 81.91, 56.49,
                  _ENCODING_DOCS),
    _encoding_row("deeplab", "resnest200", "pcontext", "fe76a26551dd5dcf2d474fd37cba99d43f6e984e", 82.50, 58.37,
                  _ENCODING_DOCS),
    _encoding_row("deeplab", "resnest269", "pcontext", "b661fd26c49656e01e9487cd9245babb12f37449", 83.06, 58.92,
                  _RESNEST_README),
    _mmseg_row("fcn", "cityscapes", "resnest_s101-d8_fcn_4xb2-80k_cityscapes-512x1024",
               "fcn_s101-d8_512x1024_80k_cityscapes", "20200807_140631-f8d155b3", 77.56, 78.98),
    _mmseg_row("pspnet", "cityscapes", "resnest_s101-d8_pspnet_4xb2-80k_cityscapes512x1024",
               "pspnet_s101-d8_512x1024_80k_cityscapes", "20200807_140631-c75f3b99", 78.57, 79.19),
    _mmseg_row("deeplabv3", "cityscapes", "resnest_s101-d8_deeplabv3_4xb2-80k_cityscapes-512x1024",
               "deeplabv3_s101-d8_512x1024_80k_cityscapes", "20200807_144429-b73c4270", 79.67, 80.51),
    _mmseg_row("deeplabv3plus", "cityscapes", "resnest_s101-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024",
               "deeplabv3plus_s101-d8_512x1024_80k_cityscapes", "20200807_144429-1239eb43", 79.62, 80.27),
    _mmseg_row("fcn", "ade20k", "resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512",
               "fcn_s101-d8_512x512_160k_ade20k", "20200807_145416-d3160329", 45.62, 46.16),
    _mmseg_row("pspnet", "ade20k", "resnest_s101-d8_pspnet_4xb4-160k_ade20k-512x512",
               "pspnet_s101-d8_512x512_160k_ade20k", "20200807_145416-a6daa92a", 45.44, 46.28),
    _mmseg_row("deeplabv3", "ade20k", "resnest_s101-d8_deeplabv3_4xb4-160k_ade20k-512x512",
               "deeplabv3_s101-d8_512x512_160k_ade20k", "20200807_144503-17ecabe5", 45.71, 46.59),
    _mmseg_row("deeplabv3plus", "ade20k", "resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512",
               "deeplabv3plus_s101-d8_512x512_160k_ade20k", "20200807_144503-27b26226", 46.47, 47.27),
)
