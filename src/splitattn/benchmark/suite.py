"""The bench grid: ours (plain, deploy, and the AOTInductor package ``splitattn.deploy.optimize`` builds) vs timm
(same architecture, same weights), torchvision resnet50, and the engines a CPU deployment would pick (ONNX Runtime,
OpenVINO on our exported ONNX file), fp32 / bf16 / int8, inference and training, in one process and one run, so
every ratio compares like with like."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from ..allocator import keep_freed_memory
from ..models.info import measure
from ..models.zoo import get_entry
from ..optional import available
from .runtimes import RUNTIMES, export_onnx, int8_files, missing_runtimes, runtime_models
from .timing import gemm_roof, median_seconds

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}  # int8: fp32 in
SETTLE_S = 0.2  # pause before each timed call: the engines' spinning threads go idle (interleaved_rates)
CALIBRATION_IMAGES = 32  # int8 rows: random images set the activation ranges (speed does not depend on them)
PEERS = ("timm", "torchvision")


class BenchError(ValueError):
    """A bench request that cannot run as asked."""


@dataclass
class BenchConfig:
    model: str = "resnest50"
    batch_sizes: tuple[int, ...] = (16,)
    image_size: int = 224
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    layouts: tuple[str, ...] = ("nchw", "nhwc")
    modes: tuple[str, ...] = ("eager", "compiled")
    train: bool = True
    peers: tuple[str, ...] = PEERS
    runtimes: tuple[str, ...] = RUNTIMES  # timed in the NHWC (or only) layout's eager rows, on the CPU
    aot: bool = True  # the ours-aot rows (CPU): splitattn.deploy.optimize's package, compiled or from its cache
    repeats: int = 5
    device: str = "cpu"


@dataclass
class Row:
    task: str  # inference | train
    form: str  # ours | ours-deploy | ours-aot | ours-lean (memory-efficient training) | timm | torchvision-resnet50 |
    # onnxruntime | openvino
    dtype: str
    layout: str
    mode: str
    batch: int
    images_per_s: float
    peak_mb: float | None = None
    vs_timm: float | None = None
    roof_pct: float | None = None
    max_abs_diff: float | None = None  # logits against our PyTorch model in fp32, same weights and images
    note: str = ""


@dataclass
class BenchResult:
    config: BenchConfig
    machine: dict
    roof_gflops: dict[str, float]
    gflop_per_image: dict[str, float]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)  # per (dtype, batch): our best form against the best peer


def timm_name(name: str) -> str | None:
    """The timm model with our architecture (our parity tests prove the pairs), or None."""
    import timm

    entry = get_entry(name)
    for candidate in (*entry.aliases, entry.name):
        if timm.is_model(candidate):
            return candidate
    return None


def build(form: str, name: str, weights: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """A model of ``form`` with ``weights`` (ours' state_dict) where the architecture is the same."""
    import splitattn

    if form in ("ours", "ours-deploy", "ours-aot", "ours-lean"):
        model = splitattn.create_model(name, memory_efficient=form == "ours-lean")
        if weights is not None:
            model.load_state_dict(weights)
        return model
    if form == "timm":
        import timm

        model = timm.create_model(timm_name(name))
        if weights is not None:
            model.load_state_dict(weights)
        return model
    if form == "torchvision-resnet50":
        import torchvision

        return torchvision.models.resnet50()
    raise BenchError(f"unknown form {form!r}")


def available_peers(config: BenchConfig, notes: list[str]) -> list[str]:
    forms = []
    for peer in config.peers:
        if peer not in PEERS:
            raise BenchError(f"unknown peer {peer!r}: choose from {', '.join(PEERS)}")
        if peer == "timm":
            try:
                import timm  # noqa: F401
            except ImportError:
                notes.append("timm is not installed, so there is no timm column: pip install 'splitattn[bench]'")
                continue
            if timm_name(config.model) is None:
                notes.append(f"timm has no model with the architecture of {config.model}")
                continue
            forms.append("timm")
        else:
            forms.append("torchvision-resnet50")
    return forms


def _prepare(model: torch.nn.Module, dtype: torch.dtype, layout: str, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.to(memory_format=torch.channels_last) if layout == "nhwc" else model


def _images(batch: int, size: int, dtype: torch.dtype, layout: str, device: torch.device) -> torch.Tensor:
    images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    return images.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else images


def inference_rate(model: torch.nn.Module, batch: int, size: int, dtype: torch.dtype, layout: str,
                   device: torch.device, repeats: int) -> float:
    images = _images(batch, size, dtype, layout, device)
    with torch.inference_mode():
        seconds = median_seconds(lambda: model(images), device, warmup=2, repeats=repeats)
    return batch / seconds


def interleaved_rates(models: dict[str, torch.nn.Module], batch: int, size: int, dtype: torch.dtype, layout: str,
                      device: torch.device, repeats: int) -> dict[str, float]:
    """Images/s of each model, timed in turn (A B C A B C …) so that a machine slowing down or speeding
    up over the minutes of a run (shared hosts do) moves every model alike and the ratios stay fair.

    Each timed call starts after a pause of ``SETTLE_S``: ONNX Runtime's and OpenVINO's worker threads keep
    spinning for a while after a call returns, which, without the pause, slowed whichever model ran next on two
    cores (our int8 package at batch 1: 38 ms interleaved against 13 ms alone)."""
    images = _images(batch, size, dtype, layout, device)
    times: dict[str, list[float]] = {form: [] for form in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(2):
                model(images)
        for _ in range(repeats):
            for form, model in models.items():
                time.sleep(SETTLE_S)
                times[form].append(median_seconds(lambda m=model: m(images), device, warmup=0, repeats=1))
    return {form: batch / statistics.median(values) for form, values in times.items()}


def train_probe(spec: dict) -> dict:
    """One training configuration, run in a fresh process so its peak memory is its own."""
    command = [sys.executable, "-m", "splitattn.benchmark.train_probe", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode:
        raise RuntimeError(f"training probe failed for {spec}: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _machine(device: torch.device) -> dict:
    import platform

    info = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(ImportError):
        import timm

        info["timm"] = timm.__version__
    return info


def _runtime_group(config: BenchConfig) -> tuple[str, str]:
    """The (layout, mode) group that the engines and the AOT package are timed in."""
    return ("nhwc" if "nhwc" in config.layouts else config.layouts[0]), "eager"


def _plan(config: BenchConfig, forms: list[str]) -> list[tuple]:
    cases = []
    aot = config.aot and config.device == "cpu"
    for batch in config.batch_sizes:
        for dtype in config.dtypes:
            for layout in config.layouts:
                for mode in config.modes:
                    extra = ["ours-aot"] if aot and (layout, mode) == _runtime_group(config) else []
                    for form in ["ours", "ours-deploy", *forms, *extra]:
                        if form == "ours-deploy" and layout == "nchw":
                            continue  # deploy works in NHWC from the stem on, whatever the input layout
                        if dtype == "int8" and form != "ours-aot":
                            continue  # int8 is the quantized package and the engines' int8 files only
                        cases.append(("inference", form, dtype, layout, mode, batch))
        if config.train:
            for dtype in (d for d in config.dtypes if d != "int8"):
                for layout in config.layouts:
                    for form in ["ours", "ours-lean", *[f for f in forms if f == "timm"]]:
                        cases.append(("train", form, dtype, layout, "eager", batch))
    return cases


def _with_ratios(rows: list[Row], roof: dict[str, float], gflop: dict[str, float]) -> None:
    timm_rows = {(r.task, r.dtype, r.layout, r.mode, r.batch): r for r in rows if r.form == "timm"}
    for row in rows:
        peer = timm_rows.get((row.task, row.dtype, row.layout, row.mode, row.batch))
        if peer is not None and row.form != "timm":
            row.vs_timm = float(f"{row.images_per_s / peer.images_per_s:.4g}")  # 4 significant digits, any size
        per_image = gflop["torchvision-resnet50" if row.form == "torchvision-resnet50" else "model"]
        per_image *= 3 if row.task == "train" else 1  # backward ≈ 2× forward
        if row.dtype in roof:  # no int8 roof: int8 rows are judged against our fp32 and the engines' int8
            row.roof_pct = round(100 * row.images_per_s * per_image / roof[row.dtype], 1)


def run_bench(config: BenchConfig, progress: bool = True) -> BenchResult:
    from ..deploy import compile_for_inference, deploy, optimize

    device = torch.device(config.device)
    for dtype in config.dtypes:
        if dtype not in DTYPES:
            raise BenchError(f"unknown dtype {dtype!r}: choose from {', '.join(DTYPES)}")
        if dtype == "fp16" and device.type == "cpu":
            raise BenchError("fp16 is a GPU format; on the CPU use bf16")
    for layout in config.layouts:
        if layout not in ("nchw", "nhwc"):
            raise BenchError(f"unknown layout {layout!r}: nchw or nhwc")
    for mode in config.modes:
        if mode not in ("eager", "compiled"):
            raise BenchError(f"unknown mode {mode!r}: eager or compiled")
    if "int8" in config.dtypes and device.type != "cpu":
        raise BenchError("int8 rows are CPU rows (oneDNN, ONNX Runtime, OpenVINO): drop int8 on " + config.device)
    if "int8" in config.dtypes and not (config.aot and "eager" in config.modes):
        raise BenchError("int8 rows are timed in the eager group beside our int8 package: keep --modes eager and "
                         "drop --no-aot, or drop int8")
    notes: list[str] = []
    if device.type == "cpu" and keep_freed_memory():  # what optimize() sets: every PyTorch row runs with it
        notes.append("glibc malloc keeps freed memory (splitattn.allocator) for every row of this process")
    forms = available_peers(config, notes)
    roof = {d: round(gemm_roof(DTYPES[d], device), 1) for d in config.dtypes if d != "int8"}
    gflop = {"model": 2 * measure(config.model, config.image_size).gmacs}
    if "torchvision-resnet50" in forms:
        import torchvision
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad(), torch.device("meta"):
            torchvision.models.resnet50()(torch.empty(1, 3, config.image_size, config.image_size))
        gflop["torchvision-resnet50"] = counter.get_total_flops() / 1e9
    result = BenchResult(config, _machine(device), roof, {k: round(v, 3) for k, v in gflop.items()}, notes=notes)
    torch.manual_seed(0)
    weights = build("ours", config.model, None).state_dict()
    cases = _plan(config, forms)
    groups: dict[tuple, list[str]] = {}  # inference rows timed together, interleaved
    for task, form, dtype, layout, mode, batch in cases:
        if task == "inference":
            groups.setdefault((dtype, layout, mode, batch), []).append(form)
    runtimes = _usable_runtimes(config, notes)
    onnx_path = export_onnx(build("ours", config.model, weights), config.image_size) if runtimes else None
    calibration = torch.randn(CALIBRATION_IMAGES, 3, config.image_size, config.image_size,
                              generator=torch.Generator().manual_seed(1))
    files = {name: {d: onnx_path for d in config.dtypes if d != "int8"} for name in runtimes}
    if runtimes and "int8" in config.dtypes:
        if "openvino" in runtimes and not available("nncf"):
            notes.append("nncf is not installed, so OpenVINO has no int8 row: pip install 'splitattn[openvino]'")
        quantizable = tuple(r for r in runtimes if r != "openvino" or available("nncf"))
        for name, path in int8_files(onnx_path, quantizable, calibration).items():
            files[name]["int8"] = path
    reference = build("ours", config.model, weights).eval()  # fp32 PyTorch: every row's max |Δ| is against it
    bar = tqdm(total=len(cases), desc="bench", disable=not progress)
    for (dtype, layout, mode, batch), group_forms in groups.items():
        models, row_notes = {}, {}
        for form in group_forms:
            model = build(form, config.model, weights if form != "torchvision-resnet50" else None).eval()
            if form == "ours-aot":
                example = torch.zeros(batch, 3, config.image_size, config.image_size)
                models[form] = optimize(model, example, dtype, calibration, progress=False)
                built = models[form]
                row_notes[form] = "package from the cache" if built.from_cache else \
                    f"compiled in {built.compile_seconds:.0f} s"
                continue
            if form == "ours-deploy":
                model = deploy(model)
            model = _prepare(model, DTYPES[dtype], layout, device)
            models[form] = compile_for_inference(model) if mode == "compiled" else model
        if runtimes and (layout, mode) == _runtime_group(config):
            per_dtype = {name: paths[dtype] for name, paths in files.items() if dtype in paths}
            models.update(runtime_models(per_dtype, dtype, batch, config.image_size))
        diffs = _max_abs_diffs(models, reference, batch, config.image_size, DTYPES[dtype], layout, device)
        rates = interleaved_rates(models, batch, config.image_size, DTYPES[dtype], layout, device, config.repeats)
        for form in models:
            result.rows.append(Row("inference", form, dtype, layout, mode, batch, round(rates[form], 2),
                                   max_abs_diff=diffs.get(form), note=row_notes.get(form, "")))
        bar.update(len(group_forms))
        torch._dynamo.reset()
    for task, form, dtype, layout, mode, batch in cases:
        if task != "train":
            continue
        spec = dict(model=config.model, form=form, dtype=dtype, layout=layout, batch=batch,
                    size=config.image_size, device=config.device, repeats=min(config.repeats, 3))
        probe = train_probe(spec)
        result.rows.append(Row(task, form, dtype, layout, mode, batch, round(probe["images_per_s"], 2),
                               peak_mb=round(probe["peak_mb"], 1)))
        bar.update(1)
    bar.close()
    roof = {d: max(roof[d], round(gemm_roof(DTYPES[d], device), 1)) for d in roof}  # best of start and end
    result.roof_gflops = roof
    _with_ratios(result.rows, roof, gflop)
    result.summary = best_against_peers(result.rows)
    return result


def _usable_runtimes(config: BenchConfig, notes: list[str]) -> tuple[str, ...]:
    unknown = [r for r in config.runtimes if r not in RUNTIMES]
    if unknown:
        raise BenchError(f"unknown runtime(s) {unknown}: choose from {', '.join(RUNTIMES)}")
    if config.runtimes and config.device != "cpu":
        notes.append("ONNX Runtime and OpenVINO rows are CPU rows: not run on " + config.device)
        return ()
    missing = missing_runtimes(config.runtimes)
    notes += missing.values()
    return tuple(r for r in config.runtimes if r not in missing)


def _max_abs_diffs(models: dict, reference: torch.nn.Module, batch: int, size: int, dtype: torch.dtype, layout: str,
                   device: torch.device) -> dict[str, float]:
    """Each form's max |Δ| of the logits against ``reference`` (fp32 PyTorch) on the same images."""
    generator = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, size, size, generator=generator)
    with torch.inference_mode():
        expected = reference(images)
        staged = images.to(device, dtype)
        staged = staged.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else staged
        return {form: float((model(staged).float().cpu() - expected).abs().max())
                for form, model in models.items() if form != "torchvision-resnet50"}


OURS = ("ours", "ours-deploy", "ours-aot")


def best_against_peers(rows: list[Row]) -> list[dict]:
    """For each (dtype, batch): our fastest inference form against the fastest peer, as a ratio."""
    summary = []
    keys = sorted({(r.dtype, r.batch) for r in rows if r.task == "inference"})
    for dtype, batch in keys:
        group = [r for r in rows if r.task == "inference" and (r.dtype, r.batch) == (dtype, batch)]
        ours = max((r for r in group if r.form in OURS), key=lambda r: r.images_per_s, default=None)
        peer = max((r for r in group if r.form not in OURS and r.form != "torchvision-resnet50"),
                   key=lambda r: r.images_per_s, default=None)
        if ours is None or peer is None:
            continue
        summary.append({"dtype": dtype, "batch": batch, "ours": f"{ours.form} {ours.layout} {ours.mode}",
                        "ours_images_per_s": ours.images_per_s, "ours_ms": round(1000 * batch / ours.images_per_s, 1),
                        "best_peer": f"{peer.form} {peer.layout} {peer.mode}", "peer_images_per_s": peer.images_per_s,
                        "peer_ms": round(1000 * batch / peer.images_per_s, 1),
                        "ratio": round(ours.images_per_s / peer.images_per_s, 3)})
    return summary


def format_table(result: BenchResult) -> str:
    header = f"{'task':9} {'form':21} {'dtype':5} {'layout':6} {'mode':8} {'batch':>5} {'img/s':>8} " \
             f"{'ms':>8} {'vs timm':>7} {'% roof':>6} {'max|Δ|':>8} {'peak MB':>8}"
    lines = [header, "-" * len(header)]
    for r in result.rows:
        ratio = f"{r.vs_timm:.2f}×" if r.vs_timm is not None else "-"
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "-"
        diff = f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-"
        roof = f"{r.roof_pct:.1f}" if r.roof_pct is not None else "-"
        lines.append(f"{r.task:9} {r.form:21} {r.dtype:5} {r.layout:6} {r.mode:8} {r.batch:>5} "
                     f"{r.images_per_s:>8.2f} {1000 * r.batch / r.images_per_s:>8.1f} {ratio:>7} {roof:>6} "
                     f"{diff:>8} {peak:>8}" + (f"  {r.note}" if r.note else ""))
    for s in result.summary:
        lines.append(f"best: {s['dtype']} batch {s['batch']}: ours {s['ours']} {s['ours_images_per_s']:.2f} img/s "
                     f"({s['ours_ms']} ms) vs {s['best_peer']} {s['peer_images_per_s']:.2f} img/s ({s['peer_ms']} ms)"
                     f" = {s['ratio']:.2f}×")
    roof = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result.roof_gflops.items())
    lines.append(f"GEMM roof measured now: {roof}; {result.config.model} = "
                 f"{result.gflop_per_image['model']:.2f} GFLOP/image at {result.config.image_size}²")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def to_json(result: BenchResult) -> str:
    return json.dumps(asdict(result), indent=2)
