"""The package as installed: a lean core, optional dependencies behind extras, and a torch minimum that is the
one the source needs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "splitattn"
OPTIONAL = ["matplotlib", "pycocotools", "onnx", "onnxscript", "onnxruntime", "timm", "tensorboard", "imgviz",
            "foolbox", "resnest"]
CORE = ["torch", "torchvision", "numpy", "pillow", "pyyaml", "tqdm"]  # pyproject.toml's dependencies


def _closure(names: list[str]) -> list:
    """The installed distributions ``names`` need (their requirements, recursively; extras and other platforms'
    requirements left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    found, todo = {}, list(names)
    while todo:
        try:
            dist = metadata.distribution(todo.pop())
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


@pytest.fixture(scope="module")
def core_site(tmp_path_factory) -> Path:
    """A site folder holding only the core's dependency closure (links into the venv): a core-only install."""
    site = tmp_path_factory.mktemp("core_site")
    for dist in _closure(CORE):
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top == ".." or (site / top).exists():
                continue
            source = Path(dist.locate_file(top))
            if source.exists():
                (site / top).symlink_to(source)
    names = {p.name for p in site.iterdir()}
    assert {"torch", "torchvision", "numpy", "PIL", "yaml", "tqdm"} <= names
    assert not names & set(OPTIONAL), names & set(OPTIONAL)
    return site


def _core_only(site: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a Python that sees the core's site folder and the source, nothing else (``-S``: no site-packages)."""
    prelude = f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT / 'src')!r}, {str(ROOT)!r}]\n"
    return subprocess.run([sys.executable, "-S", "-c", prelude + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_the_core_imports_and_runs_without_any_optional_package(core_site):
    done = _core_only(core_site, """
        import sys
        import torch
        import splitattn
        from splitattn.cli import build_parser
        import splitattn.classification, splitattn.detection, splitattn.segmentation, splitattn.engine
        model = splitattn.create_model("resnest14").eval()
        transform = splitattn.create_transform("resnest50")
        from splitattn.data.sample_photos import sample_photos
        from splitattn.data.images import open_image
        image = transform(open_image(sample_photos()[0].path)).unsqueeze(0)
        with torch.no_grad():
            assert torch.allclose(splitattn.deploy(model)(image), model(image), atol=1e-4)
        build_parser()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {optional!r})
        assert not loaded, loaded
        print("core ok")
    """.replace("{optional!r}", repr(OPTIONAL)))
    assert done.returncode == 0 and "core ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("code,extra", [
    ("from splitattn.detection.evaluate import load_coco; load_coco({})", "det"),
    ("from splitattn.detection.data import encode_mask; import numpy; encode_mask(numpy.ones((2, 2), bool))", "det"),
    ("from splitattn.engine.plots import pyplot; pyplot()", "plots"),
    ("from splitattn.export import run_exported; run_exported('m.onnx', 'onnx')", "export"),
])
def test_a_missing_extra_is_an_error_that_names_it(core_site, code, extra):
    done = _core_only(core_site, f"""
        from splitattn.optional import MissingDependency
        try:
            {code}
        except MissingDependency as err:
            print(err)
    """)
    assert f"pip install 'splitattn[{extra}]'" in done.stdout, done.stdout + done.stderr[-2000:]


def test_the_cli_names_the_extra_and_training_goes_on_without_plots(core_site, tmp_path):
    done = _core_only(core_site, """
        import sys
        from splitattn.cli import main
        sys.exit(main(sys.argv[1:]))
    """, "export", "resnest14", "--format", "onnx", "--output", str(tmp_path / "m.onnx"))
    assert done.returncode == 2 and "pip install 'splitattn[export]'" in done.stderr, done.stderr[-2000:]
    from tests.test_data import _require_fashion_mnist

    _require_fashion_mnist()
    trained = _core_only(core_site, """
        import sys
        from splitattn.cli import main
        sys.exit(main(sys.argv[1:]))
    """, "train", "--config", "configs/fashion_mnist/resnest_cpu.yaml", "data.train_subset=256", "data.val_subset=64",
        "optim.batch_size=64", "optim.epochs=1", "optim.warmup_epochs=0", "engine.compile=false", "engine.device=cpu",
        "engine.progress=false", f"engine.out_dir={tmp_path / 'run'}", "model.overrides.base_planes=8",
        "model.overrides.stem_width=8")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "curves.png and prediction pictures not written: pip install 'splitattn[plots]'" in trained.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.pth").is_file() and not (tmp_path / "run" / "curves.png").exists()


# Every torch / torchvision API the source uses that is younger than torch 2.0 / torchvision 0.15, and the first
# release that has it (as used). Read from the released wheels' files; the rows are kept honest both ways: each
# pattern must still occur in src/, and the minimums in pyproject.toml must be the highest of them.
API_MINIMUMS = [
    (r"torch\.compiler\.is_exporting\(", "torch", (2, 7), "torch/compiler/__init__.py: def is_exporting, first in 2.7"),
    (r"torch\.is_autocast_enabled\(\s*[\"'a-z]", "torch", (2, 4), "is_autocast_enabled(device_type) in 2.4's _C stub"),
    (r"torch\.get_autocast_dtype\(", "torch", (2, 4), "torch/_C/__init__.pyi of 2.4"),
    (r"torch\.compiler\.is_compiling\(", "torch", (2, 3), "torch/compiler/__init__.py of 2.3"),
    (r"torch\.amp\.GradScaler\(", "torch", (2, 3), "torch/amp/grad_scaler.py, new in 2.3"),
    (r"dynamo=True", "torch", (2, 5), "onnx.export(dynamo=True, dynamic_shapes=...) returns an ONNXProgram in 2.5"),
    (r"torch\.export\.Dim\(", "torch", (2, 2), "torch/export/__init__.py def Dim in 2.2"),
    (r"torch\.ops\.mkldnn\._reorder_convolution_weight", "torch", (2, 1), "op schema in libtorch_cpu 2.1"),
    (r"\bFlopCounterMode\b", "torch", (2, 1), "torch/utils/flop_counter.py, new in 2.1"),
    (r"def _apply\(self, fn, recurse", "torch", (2, 1), "Module._apply(fn, recurse=True) since 2.1"),
    (r"SanitizeBoundingBoxes\(labels_getter=", "torchvision", (0, 18), "a tuple from labels_getter: vision PR #8319"),
    (r"\btv_tensors\.", "torchvision", (0, 16), "torchvision/tv_tensors, new in 0.16"),
]


def _declared(package: str) -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{package}>=([\d.]+)"', text)
    assert match, f"pyproject.toml declares no minimum for {package}"
    return tuple(int(part) for part in match.group(1).split("."))


def test_the_declared_torch_minimum_is_what_the_source_uses():
    source = "\n".join(path.read_text() for path in SOURCE.rglob("*.py"))
    needed: dict[str, tuple[int, ...]] = {}
    for pattern, package, version, evidence in API_MINIMUMS:
        assert re.search(pattern, source), f"{pattern} ({evidence}) no longer occurs in src/: drop its row"
        needed[package] = max(needed.get(package, (0,)), version)
    assert _declared("torch") == needed["torch"], "pyproject.toml's torch minimum is not what the source needs"
    # torchvision 0.N+15 is the release for torch 2.N: the pair the torch minimum implies
    assert _declared("torchvision") == max(needed["torchvision"], (0, needed["torch"][1] + 15))
