"""The model zoo: one entry per variant, holding everything known about it in one place.

Each :class:`ModelEntry` carries the architecture arguments, the published reference figures with
their sources, the train crop, the official evaluation preprocessing and the checkpoint (file
name, sha256 prefix, URLs). Docs, tests and the CLI all read these entries.

Reference figures (``shared/spec/paper-facts.md`` §4-5, §10):

* ``paper``: ResNeSt paper v1 (arXiv 2004.08955) text, or its claims as listed by sotaverified.org;
* ``official``: the official repo's README / ``ablation.md`` (#P, "GFLOPs" which are multiply-adds,
  top-1 of the released weights under the PyTorch verify script; ``top1_gluon`` under Gluon's);
* ``exact count``: an exact parameter / multiply-add count of the official torch architecture;
* ``gluoncv`` / ``timm``: those projects' model zoo tables for the GluonCV-trained 14/26.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SRC_PAPER = "Zhang et al. 2020, ResNeSt, arXiv 2004.08955v1 (abstract, §5.2)"
SRC_PAPER_SV = "ResNeSt paper claims as listed by sotaverified.org/papers/resnest-split-attention-networks"
SRC_README = "zhanghang1989/ResNeSt README.md @1dfb3e8 (released torch weights, scripts/torch/verify.py)"
SRC_ABLATION = "zhanghang1989/ResNeSt ablation.md @1dfb3e8"
SRC_COUNT = "exact count of the official torch architecture (paper-facts.md §4 [CNT])"
SRC_GLUONCV = "dmlc/gluon-cv docs/model_zoo/csv_tables/Classifications/ResNeSt.csv"
SRC_TIMM = "timm results-imagenet.csv and benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv"

OFFICIAL_URL = "https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1/{}"
TIMM_MIRROR_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-resnest/{}"
TIMM_GLUON_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/{}"
# timm's Hugging Face Hub copies: ``hf_hub_id='timm/'`` + the timm name and tag in timm/models/resnest.py default_cfgs
# (huggingface/pytorch-image-models, timm 1.0.x), e.g. https://huggingface.co/timm/resnest50d.in1k
TIMM_HUB_REPOS = {
    "resnest14": "timm/resnest14d.gluon_in1k", "resnest26": "timm/resnest26d.gluon_in1k",
    "resnest50": "timm/resnest50d.in1k", "resnest101": "timm/resnest101e.in1k", "resnest200": "timm/resnest200e.in1k",
    "resnest269": "timm/resnest269e.in1k", "resnest50_fast_4s2x40d": "timm/resnest50d_4s2x40d.in1k",
    "resnest50_fast_1s4x24d": "timm/resnest50d_1s4x24d.in1k",
}


@dataclass(frozen=True)
class Reference:
    """Published figures for a variant. ``gmacs`` are multiply-adds at ``crop``×``crop``."""

    label: str
    source: str
    params_m: float | None = None
    gmacs: float | None = None
    crop: int | None = None
    top1: float | None = None
    top1_gluon: float | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Official evaluation preprocessing: centre square of side short·crop_pct, resized to crop×crop.

    ``crop_pct = crop / (crop + 32)`` is the official ``ECenterCrop`` (scripts/torch/verify.py).
    """

    crop: int
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def crop_pct(self) -> float:
        return self.crop / (self.crop + 32)


@dataclass(frozen=True)
class HubFile:
    """A copy of a checkpoint on the Hugging Face Hub, fetched with ``huggingface_hub.hf_hub_download``.

    Not a mirror: other bytes than the official ``.pth`` (timm re-saved the tensors as safetensors), so it
    has its own integrity check: ``sha256`` when known, else the Hub's own LFS sha256 (``models/hub.py``).
    ``keys`` names the key layout of the file (``key_converters.HUB_KEY_LAYOUTS``).
    """

    repo_id: str
    filename: str = "model.safetensors"
    revision: str = "main"
    sha256: str | None = None
    keys: str = "timm"

    @property
    def spec(self) -> str:
        """The ``pretrained=`` string that names this file: ``hf-hub:OWNER/NAME[/FILE][@REVISION]``."""
        file = "" if self.filename == "model.safetensors" else f"/{self.filename}"
        revision = "" if self.revision == "main" else f"@{self.revision}"
        return f"hf-hub:{self.repo_id}{file}{revision}"


@dataclass(frozen=True)
class Checkpoint:
    """A released state_dict: ``filename`` ends in the first 8 hex digits of its sha256.

    ``hub_files`` are other copies of the same weights on the Hugging Face Hub, tried after ``urls``.
    """

    filename: str
    sha256_prefix: str
    urls: tuple[str, ...]
    num_classes: int = 1000
    trained_with: str = "MXNet Gluon recipe (paper-facts.md §7.2), converted to PyTorch by the authors"
    hub_files: tuple[HubFile, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    arch: Mapping[str, object]
    train_crop: int
    eval: EvalConfig
    references: tuple[Reference, ...] = ()
    checkpoint: Checkpoint | None = None
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def reference(self, label: str) -> Reference | None:
        return next((r for r in self.references if r.label == label), None)

    def __deepcopy__(self, memo: dict) -> ModelEntry:
        return self  # immutable; copy.deepcopy(model) (EMA, deploy) would otherwise fail on ``arch``

    def __reduce__(self):
        return get_entry, (self.name,)  # pickles by name: the registry holds the one instance


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` to the zoo (users may register their own variants and checkpoints)."""
    for name in (entry.name, *entry.aliases):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[entry.name] = entry
    _ALIASES.update({alias: entry.name for alias in entry.aliases})
    return entry


def unregister_model(name: str) -> None:
    entry = _REGISTRY.pop(name)
    for alias in entry.aliases:
        _ALIASES.pop(alias, None)


def list_models(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``tag``: 'resnest', 'fast', 'baseline')."""
    return [name for name, entry in _REGISTRY.items()
            if fnmatch.fnmatch(name, pattern) and (tag is None or tag in entry.tags)]


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name`` or one of its aliases (timm names such as ``resnest50d`` are aliases)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        return _REGISTRY[_ALIASES[name]]
    close = difflib.get_close_matches(name, [*_REGISTRY, *_ALIASES], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} splitattn.list_models() (or `splitattn list`) shows all.")


# --------------------------------------------------------------------------- entries
def _arch(layers, radix, cardinality, width, stem, avd=True, avd_first=False, **extra):
    return MappingProxyType(dict(layers=tuple(layers), radix=radix, cardinality=cardinality,
                                 bottleneck_width=width, stem_width=stem, avd=avd, avd_first=avd_first, **extra))


def _official(name: str, sha: str, mirrored: bool = False) -> Checkpoint:
    filename = f"{name}-{sha}.pth"
    urls = (OFFICIAL_URL.format(filename),)
    if mirrored:  # timm mirrored these byte-identical files after the first URL breakage (timm #177)
        urls += (TIMM_MIRROR_URL.format(filename),)
    return Checkpoint(filename, sha, urls, hub_files=_timm_hub(name))


def _gluoncv(name: str, sha: str) -> Checkpoint:
    filename = f"gluon_{name}-{sha}.pth"
    return Checkpoint(filename, sha, (TIMM_GLUON_URL.format(filename),),
                      trained_with="GluonCV (MXNet), ported to PyTorch keys by timm", hub_files=_timm_hub(name))


def _timm_hub(name: str) -> tuple[HubFile, ...]:
    return (HubFile(TIMM_HUB_REPOS[name]),) if name in TIMM_HUB_REPOS else ()


for _name, _layers, _t1, _params, _gmacs, _sha in [
    ("resnest14", (1, 1, 1, 1), 75.75, 10.61, 2.76, "9c8fe254"),
    ("resnest26", (2, 2, 2, 2), 78.68, 17.07, 3.64, "50eb607c"),
]:
    register_model(ModelEntry(
        name=_name,
        description=f"ResNeSt-{_name[7:]} (GluonCV extra, not in the paper; 2s1x64d, stem 32)",
        arch=_arch(_layers, 2, 1, 64, 32),
        train_crop=224,
        # GluonCV evaluated < 320 px with a 0.875 short-side resize + centre crop, bilinear.
        eval=EvalConfig(224, interpolation="bilinear"),
        references=(Reference("gluoncv", SRC_GLUONCV, top1=_t1),
                    Reference("timm", SRC_TIMM, params_m=_params, gmacs=_gmacs, crop=224)),
        checkpoint=_gluoncv(_name, _sha),
        aliases=(f"{_name}d",),
        tags=("resnest",),
    ))

_MAIN = [
    # name, layers, stem, train crop, eval crop, paper top-1 (source), official #P, GMACs@eval, torch/gluon top-1, sha
    ("resnest50", (3, 4, 6, 3), 32, 224, 224, 81.13, SRC_PAPER, 27.48, 5.37, 81.03, 81.04, "528c19ca"),
    ("resnest101", (3, 4, 23, 3), 64, 224, 256, 83.0, SRC_PAPER_SV, 48.28, 13.32, 82.83, 82.81, "22405ba7"),
    ("resnest200", (3, 24, 36, 3), 64, 256, 320, 83.9, SRC_PAPER_SV, 70.20, 35.52, 83.84, 83.88, "75117900"),
    ("resnest269", (3, 30, 48, 8), 64, 320, 416, 84.5, SRC_PAPER_SV, 110.93, 77.35, 84.54, 84.53, "0cc87c48"),
]
_TIMM_NAMES = {"resnest50": "resnest50d", "resnest101": "resnest101e", "resnest200": "resnest200e",
               "resnest269": "resnest269e"}
for _name, _layers, _stem, _train, _crop, _ptop1, _psrc, _params, _gmacs, _t1, _g1, _sha in _MAIN:
    register_model(ModelEntry(
        name=_name,
        description=f"ResNeSt-{_name[7:]} (2s1x64d, avd after the 3×3, stem {_stem}); the paper's main model",
        # dropout 0.2 before fc for the >200-layer models, as the Gluon definitions (paper §4)
        arch=_arch(_layers, 2, 1, 64, _stem, drop_rate=0.2 if _name in ("resnest200", "resnest269") else 0.0),
        train_crop=_train,
        eval=EvalConfig(_crop),
        references=(
            Reference("paper", _psrc, top1=_ptop1),
            Reference("official", SRC_README, top1=_t1, top1_gluon=_g1),
            Reference("exact count", SRC_COUNT, params_m=_params, gmacs=_gmacs, crop=_crop),
        ),
        checkpoint=_official(_name, _sha, mirrored=True),
        aliases=(_TIMM_NAMES[_name],),
        tags=("resnest",),
    ))

_FAST = [
    # setting, radix, cardinality, width, official #P, GFLOPs, torch, gluon top-1, exact #P, GMACs, sha, timm alias
    ("1s1x64d", 1, 1, 64, 26.3, 4.34, 80.33, 80.35, 26.22, 4.33, "d8fbf808", None),
    ("2s1x64d", 2, 1, 64, 27.5, 4.34, 80.53, 80.65, 27.48, 4.33, "44938639", None),
    ("4s1x64d", 4, 1, 64, 31.9, 4.35, 80.76, 80.90, 31.91, 4.34, "f74f3fc3", None),
    ("1s2x40d", 1, 2, 40, 25.9, 4.38, 80.59, 80.72, 25.95, 4.36, "32830b84", None),
    ("2s2x40d", 2, 2, 40, 26.9, 4.38, 80.61, 80.84, 26.94, 4.37, "9d126481", None),
    ("4s2x40d", 4, 2, 40, 30.4, 4.41, 81.14, 81.17, 30.42, 4.37, "41d14ed0", "resnest50d_4s2x40d"),
    ("1s4x24d", 1, 4, 24, 25.7, 4.42, 80.99, 80.97, 25.68, 4.40, "d4a4f76f", "resnest50d_1s4x24d"),
]
_FAST_ROLE = {
    "1s1x64d": "radix 1: an SE-like sigmoid gate (paper Table 2 ablation)",
    "2s1x64d": "radix 2: SK-like attention, the paper's ResNeSt-50-fast (80.64 in the paper text)",
}
for _setting, _r, _k, _w, _p, _gf, _t1, _g1, _cp, _cg, _sha, _alias in _FAST:
    _name = f"resnest50_fast_{_setting}"
    _refs = [Reference("official", SRC_ABLATION, params_m=_p, gmacs=_gf, crop=224, top1=_t1, top1_gluon=_g1),
             Reference("exact count", SRC_COUNT, params_m=_cp, gmacs=_cg, crop=224)]
    if _setting == "2s1x64d":
        _refs.insert(0, Reference("paper", SRC_PAPER, top1=80.64))
    register_model(ModelEntry(
        name=_name,
        description=f"ResNeSt-50-fast {_setting} (radix {_r}, cardinality {_k}, width {_w}d; avd before the 3×3)"
        + (f"; {_FAST_ROLE[_setting]}" if _setting in _FAST_ROLE else ""),
        arch=_arch((3, 4, 6, 3), _r, _k, _w, 32, avd_first=True),
        train_crop=224,
        eval=EvalConfig(224),
        references=tuple(_refs),
        checkpoint=_official(_name, _sha, mirrored=_alias is not None),
        aliases=(_alias,) if _alias else (),
        tags=("resnest", "fast"),
    ))

register_model(ModelEntry(
    name="resnet50d",
    description="ResNet-D-50 baseline (radix 0 = plain bottleneck, stride in the 3×3, deep stem 32, avg-down)",
    arch=_arch((3, 4, 6, 3), 0, 1, 64, 32, avd=False),
    train_crop=224,
    eval=EvalConfig(224),
    references=(Reference("paper", SRC_PAPER, top1=78.31),
                Reference("exact count", SRC_COUNT, params_m=25.58, gmacs=4.33, crop=224)),
    tags=("baseline",),
))
register_model(ModelEntry(
    name="resnext50d_32x4d",
    description="ResNeXt-D-50 32x4d baseline (radix 0, cardinality 32, width 4d, deep stem 32, avg-down)",
    arch=_arch((3, 4, 6, 3), 0, 32, 4, 32, avd=False),
    train_crop=224,
    eval=EvalConfig(224),
    tags=("baseline",),
))
