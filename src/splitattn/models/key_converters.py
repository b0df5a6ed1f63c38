"""Rename ResNeSt / ResNet-D backbone weights between the official, detectron2, mmdetection and mmpretrain
layouts.

Our models use the official key names (zhanghang1989/ResNeSt ``resnest/torch/models/resnet.py`` +
``splat.py``); timm's ``resnest*`` keys are identical, so "official" covers timm too. The converters
only rename: the tensors, their shapes and their order are kept, nothing is re-initialised.

Where each layout comes from (read from the public source, not guessed):

* **detectron2**: ``resnest/d2/resnest.py`` and ``resnest/d2/splat.py`` of zhanghang1989/ResNeSt (the
  official detectron2 wrapper; the chongruo/zhanghang1989 ``detectron2-ResNeSt`` forks carry the same
  backbone). ``detectron2.layers.Conv2d`` keeps its norm as a child called ``norm`` (detectron2
  ``layers/wrappers.py``: ``self.norm = norm``), so every conv+BN pair becomes ``X.weight`` + ``X.norm.*``.
  ``BasicStem(deep_stem=True)`` has ``conv1_1`` / ``conv1_2`` / ``conv1_3``; stages are ``res2``..``res5``;
  the shortcut is one ``Conv2d`` called ``shortcut`` (the avg-down pool, ``shortcut_avgpool``, has no
  parameters); ``SplAtConv2d`` has ``conv`` (a norm-less Conv2d), ``bn0``, ``fc1``, ``bn1``, ``fc2`` (fc1/fc2
  with bias); the optional classifier is ``linear``. A full detector saves ``{"model": state_dict, ...}``
  with the backbone under ``backbone.bottom_up.`` (FPN under ``backbone.fpn_*`` / ``backbone.top_block``,
  heads under ``proposal_generator.`` / ``roi_heads.``). The released backbone-init files
  (``resnest50_detectron-255b5649.pth`` etc.) are the torch ImageNet weights renamed to these names and
  prefixed with ``backbone.bottom_up.`` (maintainer comment "new_name = 'backbone.bottom_up.' + old_name"
  in https://github.com/zhanghang1989/ResNeSt/issues/9; example key ``backbone.bottom_up.stem.conv1_1.weight``
  in https://github.com/chongruo/detectron2-ResNeSt/issues/24), without a classifier
  (https://github.com/chongruo/detectron2-ResNeSt/issues/34). ``FrozenBatchNorm2d`` (frozen stages) has
  weight/bias/running_mean/running_var and no ``num_batches_tracked``; ``load_state_dict`` of a plain dict
  fills that counter in, so such files still load with ``strict=True``.
  Note: the d2 block builds ``SplAtConv2d`` only for ``radix > 1``; ``RADIX: 1`` there is a plain conv, so
  d2 names for our radix-1 split-attention models (``resnest50_fast_1s*``) need a matching d2 block.
* **mmdet** (also mmseg): open-mmlab/mmdetection ``mmdet/models/backbones/resnest.py``
  (``ResNeSt(ResNetV1d)``, ``SplitAttentionConv2d``), ``mmdet/models/backbones/resnet.py``
  (``_make_stem_layer``: deep stem ``nn.Sequential`` conv/norm/ReLU ×3 → ``stem.0,1,3,4,6,7``) and
  ``mmdet/models/layers/res_layer.py`` (``ResLayer``: avg-down shortcut ``[AvgPool2d, conv, norm]`` →
  ``downsample.1`` / ``downsample.2``, the pool present even at stride 1: ``if avg_down:`` appends it whatever
  the stride); norm names come from open-mmlab/mmcv ``mmcv/cnn/bricks/norm.py`` (``build_norm_layer``:
  abbreviation + postfix, ``bn`` for BN and SyncBN), giving ``bn1``, ``bn3``, ``conv2.bn0``, ``conv2.bn1`` (and
  ``bn2`` in plain ResNetV1d blocks). So mmdet blocks already use the official names; only the stem differs,
  and there is no classifier (a ``head.fc`` found next to mmdet-named backbone keys is still taken as ``fc``).
  open-mmlab/mmsegmentation ``mmseg/models/backbones/resnet.py`` and ``mmseg/models/utils/res_layer.py`` build
  the same stem and shortcut, so mmseg files use this layout too.
  Checkpoints are ``{"meta": ..., "state_dict": {"backbone.…", "neck.…", "rpn_head.…", ...}}``.
* **mmpretrain** (formerly mmcls): open-mmlab/mmpretrain ``mmpretrain/models/backbones/resnest.py`` (blocks
  named as in mmdet: ``conv1``, ``bn1``, ``conv2.{conv,bn0,fc1,bn1,fc2}``, ``conv3``, ``bn3``; ``avd_layer``
  has no parameters) and ``mmpretrain/models/backbones/resnet.py``, which differs from mmdet in two places:
  ``_make_stem_layer`` builds the deep stem from three open-mmlab/mmcv ``ConvModule`` blocks
  (``mmcv/cnn/bricks/conv_module.py``: children ``conv``, and the norm named by ``build_norm_layer`` without a
  postfix, ``bn``; ``bias='auto'`` leaves the conv without bias) → ``stem.{0,1,2}.conv`` / ``stem.{0,1,2}.bn``;
  and its ``ResLayer`` adds the avg-down ``AvgPool2d`` only ``if avg_down and stride != 1``, so a shortcut of a
  stride-1 first block (layer1.0 with the default ``strides=(1, 2, 2, 2)``) is ``downsample.0`` (conv) +
  ``downsample.1`` (norm), while strided ones keep ``downsample.1`` / ``downsample.2``. The classifier is
  ``LinearClsHead`` (``mmpretrain/models/heads/linear_head.py``: ``self.fc``) → ``head.fc``; the
  ``GlobalAveragePooling`` neck has no parameters. An ``ImageClassifier`` checkpoint is
  ``{"meta": ..., "state_dict": {"backbone.…", "head.fc.weight", "head.fc.bias"}}``. Reading, each block's
  shortcut numbering is taken from its own keys (a tensor at ``downsample.0`` means no pool), so any stride
  pattern converts; writing (:func:`from_official`) assumes mmpretrain's ``strides=(1, 2, 2, 2)``: only
  layer1's shortcut loses the pool slot.

Layout table (``L`` = 1..4, ``B`` = block index, ``*`` = BN tensors):

======================================  ================================  ==============================
official / timm (ours)                  detectron2                        mmdet / mmseg
======================================  ================================  ==============================
conv1.0.weight                          stem.conv1_1.weight               stem.0.weight
conv1.1.*                               stem.conv1_1.norm.*               stem.1.*
conv1.3.weight                          stem.conv1_2.weight               stem.3.weight
conv1.4.*                               stem.conv1_2.norm.*               stem.4.*
conv1.6.weight                          stem.conv1_3.weight               stem.6.weight
bn1.*                                   stem.conv1_3.norm.*               stem.7.*
layerL.B.conv1.weight                   res{L+1}.B.conv1.weight           layerL.B.conv1.weight
layerL.B.bn1.*                          res{L+1}.B.conv1.norm.*           layerL.B.bn1.*
layerL.B.conv2.conv.weight              res{L+1}.B.conv2.conv.weight      layerL.B.conv2.conv.weight
layerL.B.conv2.bn0.*                    res{L+1}.B.conv2.bn0.*            layerL.B.conv2.bn0.*
layerL.B.conv2.fc1.weight/bias          res{L+1}.B.conv2.fc1.weight/bias  layerL.B.conv2.fc1.weight/bias
layerL.B.conv2.bn1.*                    res{L+1}.B.conv2.bn1.*            layerL.B.conv2.bn1.*
layerL.B.conv2.fc2.weight/bias          res{L+1}.B.conv2.fc2.weight/bias  layerL.B.conv2.fc2.weight/bias
layerL.B.conv2.weight (radix 0)         res{L+1}.B.conv2.weight           layerL.B.conv2.weight
layerL.B.bn2.* (radix 0)                res{L+1}.B.conv2.norm.*           layerL.B.bn2.*
layerL.B.conv3.weight                   res{L+1}.B.conv3.weight           layerL.B.conv3.weight
layerL.B.bn3.*                          res{L+1}.B.conv3.norm.*           layerL.B.bn3.*
layerL.B.downsample.1.weight            res{L+1}.B.shortcut.weight        layerL.B.downsample.1.weight
layerL.B.downsample.2.*                 res{L+1}.B.shortcut.norm.*        layerL.B.downsample.2.*
fc.weight/bias                          linear.weight/bias                head.fc.weight/bias
layerL.B.conv2_offset.weight/bias (DCN) res{L+1}.B.conv2_offset.*         (none: mmcv packs differ)
======================================  ================================  ==============================

mmpretrain uses the mmdet names except in these rows:

======================================  ==============================================================
official / timm (ours)                  mmpretrain
======================================  ==============================================================
conv1.0.weight                          stem.0.conv.weight
conv1.1.*                               stem.0.bn.*
conv1.3.weight                          stem.1.conv.weight
conv1.4.*                               stem.1.bn.*
conv1.6.weight                          stem.2.conv.weight
bn1.*                                   stem.2.bn.*
layerL.0.downsample.1.weight            layerL.0.downsample.0.weight (stride-1 block: layer1)
layerL.0.downsample.2.*                 layerL.0.downsample.1.* (stride-1 block: layer1)
layerL.0.downsample.1.weight            layerL.0.downsample.1.weight (strided block: layer2..4)
layerL.0.downsample.2.*                 layerL.0.downsample.2.* (strided block: layer2..4)
fc.weight/bias                          head.fc.weight/bias (outside the ``backbone.`` prefix)
======================================  ==============================================================

Deformable-conv blocks (``deform_stages``) keep the plug-in's ``conv2_offset`` name; their 3×3 weight keeps the
plain key (``conv2.conv.weight``, ``conv2.weight`` for radix 0).

Not representable (a clear error, never a silent drop): mmcv / mmdet deformable convs (``conv2.conv.conv_offset``:
an ungrouped offset conv inside the conv), mmdet plugins, GroupNorm-named (``gn1``) mmdet backbones, 7×7-stem
ResNets. Detectron2 ``.pkl`` files (pickled numpy, often Caffe2 names) must be turned into ``.pth`` first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .weights import CheckpointError, atomic_save, read_checkpoint_file, save_format

LAYOUTS = ("official", "detectron2", "mmdet", "mmpretrain")

# One row per tensor family: (official, detectron2, mmdet, mmpretrain). Fields: {s} official stage 1..4, {r} d2
# stage 2..5 (= s + 1), {b} block index, {bn} a BatchNorm tensor, {wb} weight or bias. The mmpretrain column
# numbers every shortcut as if it had the pool slot (like mmdet); to_official (via _mmpretrain_poolless) and
# from_official move a stride-1 block's shortcut between that form and mmpretrain's pool-less ``downsample.0/1``.
_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("conv1.0.weight", "stem.conv1_1.weight", "stem.0.weight", "stem.0.conv.weight"),
    ("conv1.1.{bn}", "stem.conv1_1.norm.{bn}", "stem.1.{bn}", "stem.0.bn.{bn}"),
    ("conv1.3.weight", "stem.conv1_2.weight", "stem.3.weight", "stem.1.conv.weight"),
    ("conv1.4.{bn}", "stem.conv1_2.norm.{bn}", "stem.4.{bn}", "stem.1.bn.{bn}"),
    ("conv1.6.weight", "stem.conv1_3.weight", "stem.6.weight", "stem.2.conv.weight"),
    ("bn1.{bn}", "stem.conv1_3.norm.{bn}", "stem.7.{bn}", "stem.2.bn.{bn}"),
) + tuple((official, d2, mm, mm) for official, d2, mm in (
    ("layer{s}.{b}.conv1.weight", "res{r}.{b}.conv1.weight", "layer{s}.{b}.conv1.weight"),
    ("layer{s}.{b}.bn1.{bn}", "res{r}.{b}.conv1.norm.{bn}", "layer{s}.{b}.bn1.{bn}"),
    ("layer{s}.{b}.conv2.conv.weight", "res{r}.{b}.conv2.conv.weight", "layer{s}.{b}.conv2.conv.weight"),
    ("layer{s}.{b}.conv2.bn0.{bn}", "res{r}.{b}.conv2.bn0.{bn}", "layer{s}.{b}.conv2.bn0.{bn}"),
    ("layer{s}.{b}.conv2.fc1.{wb}", "res{r}.{b}.conv2.fc1.{wb}", "layer{s}.{b}.conv2.fc1.{wb}"),
    ("layer{s}.{b}.conv2.bn1.{bn}", "res{r}.{b}.conv2.bn1.{bn}", "layer{s}.{b}.conv2.bn1.{bn}"),
    ("layer{s}.{b}.conv2.fc2.{wb}", "res{r}.{b}.conv2.fc2.{wb}", "layer{s}.{b}.conv2.fc2.{wb}"),
    ("layer{s}.{b}.conv2.weight", "res{r}.{b}.conv2.weight", "layer{s}.{b}.conv2.weight"),
    ("layer{s}.{b}.bn2.{bn}", "res{r}.{b}.conv2.norm.{bn}", "layer{s}.{b}.bn2.{bn}"),
    ("layer{s}.{b}.conv3.weight", "res{r}.{b}.conv3.weight", "layer{s}.{b}.conv3.weight"),
    ("layer{s}.{b}.bn3.{bn}", "res{r}.{b}.conv3.norm.{bn}", "layer{s}.{b}.bn3.{bn}"),
    ("layer{s}.{b}.downsample.1.weight", "res{r}.{b}.shortcut.weight", "layer{s}.{b}.downsample.1.weight"),
    ("layer{s}.{b}.downsample.2.{bn}", "res{r}.{b}.shortcut.norm.{bn}", "layer{s}.{b}.downsample.2.{bn}"),
    ("fc.{wb}", "linear.{wb}", "head.fc.{wb}"),
)) + (
    # DCN blocks: the official detectron2 plug-in's offset conv (mmcv's DCN packs differ in shape: not mapped)
    ("layer{s}.{b}.conv2_offset.{wb}", "res{r}.{b}.conv2_offset.{wb}", None, None),
)

# mmpretrain ResNeSt/ResNetV1d default strides=(1, 2, 2, 2): only layer1's first block has a stride-1 shortcut,
# which mmpretrain's ResLayer builds without the AvgPool2d.
_MMPRETRAIN_STRIDE1_STAGES = ("layer1",)
_SHORTCUT = re.compile(r"(?P<block>layer[1-4]\.\d+)\.downsample\.(?P<i>\d+)\.(?P<tensor>\w+)\Z")

_FIELDS = {
    "s": r"(?P<s>[1-4])",
    "r": r"(?P<r>[2-5])",
    "b": r"(?P<b>\d+)",
    "bn": r"(?P<bn>weight|bias|running_mean|running_var|num_batches_tracked)",
    "wb": r"(?P<wb>weight|bias)",
}


def _compile(template: str | None) -> re.Pattern[str]:
    if template is None:  # a tensor family the layout does not have
        return re.compile(r"(?!)")
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    return re.compile("".join(_FIELDS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts)) + r"\Z")


_PATTERNS = {layout: [_compile(row[i]) for row in _ROWS] for i, layout in enumerate(LAYOUTS)}
_TEMPLATES = {layout: [row[i] for row in _ROWS] for i, layout in enumerate(LAYOUTS)}

_WRAPPERS = ("state_dict", "model", "module")  # checkpoint dicts that hold the weights, in this order


def _rename(key: str, source: str, target: str) -> str | None:
    """``key`` in ``source`` names → the ``target`` name, or None if no row matches."""
    for pattern, template in zip(_PATTERNS[source], _TEMPLATES[target]):
        match = pattern.match(key)
        if match:
            fields = match.groupdict()
            if "r" in fields:
                fields["s"] = str(int(fields["r"]) - 1)
            elif "s" in fields:
                fields["r"] = str(int(fields["s"]) + 1)
            return None if template is None else template.format(**fields)
    return None


def _shift_shortcut(key: str, blocks: set[str], delta: int) -> str:
    """``layerL.B.downsample.i.*`` → ``downsample.{i + delta}.*`` when ``layerL.B`` is in ``blocks``."""
    match = _SHORTCUT.match(key)
    if match is None or match["block"] not in blocks:
        return key
    return f"{match['block']}.downsample.{int(match['i']) + delta}.{match['tensor']}"


def _mmpretrain_poolless(keys: list[str], notes: list[str]) -> set[str]:
    """The ``layerL.B`` blocks of an mmpretrain backbone whose shortcut has no pool slot (``downsample.0/1``).

    A block whose shortcut has a tensor at ``downsample.0`` was built without the pool (stride 1); which blocks
    those are is read from the keys, not assumed."""
    indices: dict[str, set[int]] = {}
    for key in keys:
        match = _SHORTCUT.match(key)
        if match:
            indices.setdefault(match["block"], set()).add(int(match["i"]))
    poolless = {block for block, seen in indices.items() if 0 in seen}
    odd = sorted(f"{block}.downsample.{{{','.join(map(str, sorted(indices[block])))}}}" for block in poolless
                 if indices[block] - {0, 1})
    if odd:
        raise ValueError(f"mmpretrain shortcut(s) with a tensor at downsample.0 (a conv without the stride-2 pool) "
                         f"and also past downsample.1, which mmpretrain's ResLayer never builds: {', '.join(odd)}")
    if poolless:
        notes.append(f"mmpretrain stride-1 shortcut(s) without AvgPool ({', '.join(sorted(poolless))}): "
                     "downsample.0/1 read as official downsample.1/2")
    return poolless


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _modules(keys: list[str], limit: int = 12) -> str:
    """Keys grouped by owning module: ``backbone.fpn_lateral2 (2), roi_heads.box_predictor.cls_score (2)``."""
    counts: dict[str, int] = {}
    for key in keys:
        owner = key.rsplit(".", 1)[0] if "." in key else key
        counts[owner] = counts.get(owner, 0) + 1
    items = [f"{owner} ({n})" for owner, n in counts.items()]
    return _summarise(items, limit)


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: object, notes: list[str]) -> dict[str, torch.Tensor]:
    """Find the dict of tensors inside a training/detector checkpoint; strip ``module.`` (DataParallel/DDP)."""
    path = "checkpoint"
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        ignored = sorted(str(k) for k in obj if k != inner)
        notes.append(f"unwrapped {path}[{inner!r}]" + (f" (ignored: {_summarise(ignored)})" if ignored else ""))
        obj, path = obj[inner], f"{path}[{inner!r}]"
    if not _is_tensor_dict(obj):
        what = type(obj).__name__
        if isinstance(obj, Mapping):
            odd = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            what = f"a dict with non-tensor entries: {_summarise(odd)}" if obj else "an empty dict"
        raise ValueError(f"not a state_dict (a dict of tensors, possibly under 'state_dict' / 'model'): got {what}")
    if any(k.startswith("module.") for k in obj):
        notes.append("removed the 'module.' prefix (DataParallel/DDP)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _split_backbone(sd: dict[str, torch.Tensor], notes: list[str]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Backbone tensors (detector prefixes stripped) and everything else."""
    for prefix, owner in (("backbone.bottom_up.", "detectron2 detector with FPN"),
                          ("backbone.", "detector or classifier")):
        if any(k.startswith(prefix) for k in sd):
            inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            notes.append(f"took the {len(inside)} tensors under {prefix!r} ({owner})")
            return inside, {k: v for k, v in sd.items() if not k.startswith(prefix)}
    return dict(sd), {}


def _detect(keys: list[str]) -> str:
    if any(k.startswith("stem.conv1_") or re.match(r"res[2-5]\.\d+\.", k) for k in keys):
        return "detectron2"
    if any(re.match(r"stem\.[0-2]\.(conv|bn)\.", k) for k in keys):
        return "mmpretrain"
    if any(re.match(r"stem\.\d+\.", k) for k in keys):
        return "mmdet"
    if any(re.match(r"(conv1|bn1|layer[1-4]|fc)\.", k) for k in keys):
        return "official"
    raise ValueError(
        "unrecognised state_dict layout: expected official/timm keys (conv1.0.weight, layer1.0.conv2.conv.weight), "
        "detectron2 keys (stem.conv1_1.weight, res2.0.conv2.conv.weight), mmdet keys (stem.0.weight, "
        "layer1.0.conv2.conv.weight) or mmpretrain keys (stem.0.conv.weight, layer1.0.downsample.0.weight); "
        f"saw {len(keys)} keys: {_summarise(keys, 6)}")


def _check_layout(layout: str, allow_auto: bool) -> None:
    allowed = (("auto",) if allow_auto else ()) + LAYOUTS
    if layout not in allowed:
        raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(allowed)}")


def detect_layout(state_dict: Mapping) -> str:
    """``'official'`` (also timm), ``'detectron2'``, ``'mmdet'`` (also mmseg) or ``'mmpretrain'`` (a deep stem of
    ``ConvModule`` blocks: ``stem.0.conv.weight``); checkpoint wrappers and detector/classifier prefixes are
    looked through. Raises ValueError naming the keys seen when none fits."""
    backbone, _ = _split_backbone(unwrap_state_dict(state_dict, []), [])
    return _detect(list(backbone))


def _unmappable_hint(keys: list[str], layout: str) -> str:
    if layout != "mmpretrain" and any(re.match(r"stem\.[0-2]\.(conv|bn)\.", k) for k in keys):
        return " stem.N.conv / stem.N.bn is mmpretrain's ConvModule stem: use source='mmpretrain'."
    if layout != "mmpretrain" and any(re.search(r"\.downsample\.0\.", k) for k in keys):
        return (" A tensor at downsample.0 is mmpretrain's stride-1 shortcut (use source='mmpretrain') or a "
                "shortcut without avg-down (plain ResNet / ResNetV1c), which splitattn models do not have.")
    if any("offset" in k for k in keys):
        return (" Only the official detectron2 plug-in's deformable convs (resN.B.conv2_offset) map to splitattn "
                "(create_model(..., deform_stages=(2, 3, 4), deform_groups=2)); mmcv's DCN packs "
                "(conv_offset inside conv2) do not.")
    if any(re.search(r"\.gn\d", k) for k in keys):
        return " GroupNorm-named (gn*) mmdet backbones are not supported."
    return ""


def to_official(state_dict: Mapping, source: str = "auto") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Backbone weights of any supported layout → official/splitattn names.

    ``state_dict`` may be a bare state_dict or a checkpoint holding one (``model`` / ``state_dict`` /
    ``module`` entries are unwrapped; ``module.``, ``backbone.bottom_up.`` and ``backbone.`` prefixes are
    stripped). ``source`` is ``'auto'`` or one of :data:`LAYOUTS`: ``'official'`` (also timm), ``'detectron2'``,
    ``'mmdet'`` (also mmseg), ``'mmpretrain'``. Tensors outside the backbone (FPN, necks, heads, pixel
    statistics) are dropped, except an mmpretrain ``head.fc`` classifier, which becomes ``fc``. Returns the new
    state_dict and notes saying what was unwrapped, dropped and renamed. Raises ValueError for an unknown
    layout or a backbone tensor with no official counterpart (nothing is dropped silently).
    """
    _check_layout(source, allow_auto=True)
    notes: list[str] = []
    backbone, outside = _split_backbone(unwrap_state_dict(state_dict, notes), notes)
    layout = _detect(list(backbone)) if source == "auto" else source
    if layout in ("mmdet", "mmpretrain") and any(re.fullmatch(r"head\.fc\.(weight|bias)", k) for k in outside):
        backbone.update({k: outside.pop(k) for k in ("head.fc.weight", "head.fc.bias") if k in outside})
        notes.append("kept the mmpretrain classifier head.fc as fc")
    if outside:
        notes.append(f"dropped {len(outside)} non-backbone tensors: {_modules(list(outside))}")
    poolless = _mmpretrain_poolless(list(backbone), notes) if layout == "mmpretrain" else set()

    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in backbone.items():
        new = _rename(_shift_shortcut(key, poolless, +1), layout, "official")
        if new is None:
            unknown.append(key)
        elif new in converted:
            raise ValueError(f"two backbone tensors map to the official key {new!r} in the {layout} layout "
                             f"(the second is {key!r})")
        else:
            converted[new] = value
    if unknown:
        raise ValueError(f"{len(unknown)} backbone tensor(s) have no official counterpart in the {layout} layout: "
                         f"{_summarise(unknown)}.{_unmappable_hint(unknown, layout)}")
    renamed = sum(old != new for old, new in zip(backbone, converted))
    notes.append(f"layout {layout}" + (" (auto-detected)" if source == "auto" else "")
                 + f": {len(converted)} tensors, {renamed} renamed")
    has_bn = any(k.endswith(".running_var") for k in converted)
    if has_bn and not any(k.endswith(".num_batches_tracked") for k in converted):
        notes.append("no num_batches_tracked buffers (e.g. detectron2 FrozenBN); load_state_dict fills them in")
    return converted, notes


DROP = object()  # returned by a whole-model ``rename``: a tensor the converted model computes itself


def whole_model_to_official(sd: dict[str, torch.Tensor], layout: str, backbone_prefix: str, out_prefix: str,
                            rename, notes: list[str], what: str, drop_reason: str = ""
                            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A whole detector / segmenter: the backbone under ``backbone_prefix`` → official names under ``out_prefix``
    (:func:`to_official` with ``source=layout``); every other key through ``rename`` (its new name, :data:`DROP`,
    or None for a key with no place in ``what``: those raise ValueError naming them)."""
    body = {k[len(backbone_prefix):]: v for k, v in sd.items() if k.startswith(backbone_prefix)}
    body, body_notes = to_official(body, source=layout)
    notes += [n for n in body_notes if not n.startswith("took the")]
    out = {f"{out_prefix}{k}": v for k, v in body.items()}
    unknown = []
    for key, value in sd.items():
        if key.startswith(backbone_prefix):
            continue
        new = rename(key)
        if new is None:
            unknown.append(key)
        elif new is DROP:
            notes.append(f"dropped {key}{f' ({drop_reason})' if drop_reason else ''}")
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"{len(unknown)} tensor(s) of this {layout} file have no place in {what}: "
                         f"{', '.join(unknown[:6])}{' …' if len(unknown) > 6 else ''}")
    return out, notes


def from_official(state_dict: Mapping[str, torch.Tensor], target: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Official/splitattn names → ``target`` layout (``'official'``, ``'detectron2'``, ``'mmdet'`` or
    ``'mmpretrain'``).

    ``prefix`` is prepended to every backbone key, e.g. ``'backbone.bottom_up.'`` for a detectron2
    ``MODEL.WEIGHTS`` init file or ``'backbone.'`` for an mmdet detector / mmpretrain ``ImageClassifier``; the
    ``head.fc`` classifier of the mmdet/mmpretrain layouts sits beside the backbone and gets no prefix. For
    ``'mmpretrain'`` the shortcut numbering is that of mmpretrain's default ``strides=(1, 2, 2, 2)`` (layer1's
    stride-1 shortcut has no pool: ``downsample.0/1``). Raises ValueError for a key outside the layout table.
    """
    _check_layout(target, allow_auto=False)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    poolless: set[str] = set()
    if target == "mmpretrain":
        poolless = {m["block"] for m in map(_SHORTCUT.match, state_dict)
                    if m and m["block"].split(".")[0] in _MMPRETRAIN_STRIDE1_STAGES}
    for key, value in state_dict.items():
        new = _rename(key, "official", target)
        if new is None:
            unknown.append(key)
        else:
            new = _shift_shortcut(new, poolless, -1)
            out[new if new.startswith("head.") else prefix + new] = value
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) are not official ResNeSt/ResNet-D backbone names: "
                         f"{_summarise(unknown)}")
    return out


def timm_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ResNeSt keys → official keys: the identity.

    timm builds ResNeSt from its ``ResNet`` with ``ResNestBottleneck`` and ``SplitAttn``
    (huggingface/pytorch-image-models ``timm/models/resnest.py``, ``timm/layers/split_attn.py``) under the
    official attribute names: deep stem ``conv1.{0,1,3,4,6}`` + ``bn1``, ``layerL.B.conv1/bn1``,
    ``conv2.{conv,bn0,fc1,bn1,fc2}``, ``conv3/bn3``, avg-down shortcut ``downsample.{1,2}``, ``fc``. For all eight
    timm ResNeSt models (timm 1.0.31) keys, shapes and order equal ours (tests/test_hub.py), and timm's Hub
    safetensors are that state_dict as saved by ``timm.models._hub.save_for_hf``. Kept as a named step so a
    future timm rename has one place to go.
    """
    return dict(state_dict)


# HubFile.keys → the function that turns such a file's keys into ours
HUB_KEY_LAYOUTS = {"official": dict, "timm": timm_to_official}


def hub_keys_to_official(state_dict: Mapping[str, torch.Tensor], keys: str) -> dict[str, torch.Tensor]:
    """A Hub file's state_dict in ``keys`` layout (a key of :data:`HUB_KEY_LAYOUTS`) → official names."""
    if keys not in HUB_KEY_LAYOUTS:
        raise CheckpointError(f"unknown key layout {keys!r} for a Hugging Face Hub file: use one of "
                              f"{', '.join(HUB_KEY_LAYOUTS)} in its HubFile(keys=...)")
    return HUB_KEY_LAYOUTS[keys](state_dict)


def convert_checkpoint_file(src: str | os.PathLike, dst: str | os.PathLike, source: str = "auto",
                            fmt: str | None = None) -> list[str]:
    """Read ``src`` safely (``torch.load(weights_only=True)`` or safetensors), convert it with :func:`to_official`
    and write the official-layout state_dict to ``dst`` atomically: safetensors when ``fmt='safetensors'`` or
    ``dst`` ends in ``.safetensors``, else ``torch.save``. Returns the notes."""
    _check_layout(source, allow_auto=True)
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() == ".pkl":
        raise CheckpointError(
            f"{src} is a detectron2 .pkl pickle (numpy arrays, possibly Caffe2 names), which splitattn does not "
            "read: convert it to .pth first. For a file you trust: python -c \"import pickle, torch; "
            f"d = pickle.load(open('{src}', 'rb'), encoding='latin1'); d = d.get('model', d); "
            "torch.save({k: torch.as_tensor(v) for k, v in d.items()}, 'weights.pth')\", then convert weights.pth")
    converted, notes = to_official(read_checkpoint_file(src), source)
    atomic_save(converted, dst, fmt=fmt)
    kind = " (safetensors)" if save_format(dst, fmt) == "safetensors" else ""
    notes.append(f"wrote {len(converted)} tensors to {dst}{kind}")
    return notes
