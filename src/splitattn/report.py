"""Plain-text tables of the zoo: measured params/GMACs beside the published figures."""

from __future__ import annotations

from .models.info import Measured, measure
from .models.weights import cache_dir
from .models.zoo import ModelEntry, get_entry


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def reference_at_crop(entry: ModelEntry) -> tuple[float | None, float | None]:
    """(params M, GMACs at the eval crop) from the most exact reference that has them."""
    for label in ("exact count", "official", "timm"):
        ref = entry.reference(label)
        if ref and ref.params_m is not None and (ref.crop in (None, entry.eval.crop)):
            return ref.params_m, ref.gmacs
    return None, None


def best_top1(entry: ModelEntry) -> tuple[float | None, float | None]:
    """(top-1 of the released weights, paper top-1)."""
    released = next((r.top1 for r in entry.references if r.label in ("official", "gluoncv") and r.top1), None)
    paper = entry.reference("paper")
    return released, paper.top1 if paper else None


def zoo_table(names: list[str]) -> str:
    header = (f"{'model':<24}{'params M':>9}{'ref':>8}{'GMACs':>8}{'ref':>8}{'crop':>6}"
              f"{'top-1':>7}{'paper':>7}  weights")
    rows = [header, "-" * len(header)]
    for name in names:
        entry = get_entry(name)
        got = measure(name)
        ref_params, ref_gmacs = reference_at_crop(entry)
        released, paper = best_top1(entry)
        weights = "-"
        if entry.checkpoint:
            weights = "cached" if (cache_dir() / entry.checkpoint.filename).is_file() else "download"
        rows.append(f"{name:<24}{got.params_m:>9.2f}{_fmt(ref_params):>8}{got.gmacs:>8.2f}{_fmt(ref_gmacs):>8}"
                    f"{got.crop:>6}{_fmt(released):>7}{_fmt(paper, 2):>7}  {weights}")
    rows.append("params/GMACs: measured here (torch.utils.flop_counter, one image at the eval crop); "
                "ref = published figure; top-1 = released weights, paper = paper text")
    return "\n".join(rows)


def entry_report(name: str, measured: Measured | None = None) -> str:
    entry = get_entry(name)
    got = measured or measure(name)
    ev = entry.eval
    lines = [
        f"{entry.name}: {entry.description}",
        f"  aliases        {', '.join(entry.aliases) or '-'}",
        f"  architecture   {', '.join(f'{k}={v}' for k, v in entry.arch.items())}",
        f"  measured       {got.params_m:.2f} M params, {got.gmacs:.2f} GMACs at {got.crop}×{got.crop}",
    ]
    for ref in entry.references:
        figures = []
        if ref.params_m is not None:
            delta = f" ({100 * (got.params_m / ref.params_m - 1):+.2f}%)"
            figures.append(f"{ref.params_m:.2f} M params{delta}")
        if ref.gmacs is not None:
            delta = f" ({100 * (got.gmacs / ref.gmacs - 1):+.2f}%)" if ref.crop == got.crop else ""
            figures.append(f"{ref.gmacs:.2f} GMACs at {ref.crop}{delta}")
        if ref.top1 is not None:
            figures.append(f"top-1 {ref.top1:.2f}" + (f" (Gluon {ref.top1_gluon:.2f})" if ref.top1_gluon else ""))
        lines.append(f"  {ref.label:<14} {'; '.join(figures)}  [{ref.source}]")
    lines += [
        f"  train crop     {entry.train_crop}",
        f"  eval           centre crop {ev.crop_pct:.3f} of the short side, resize to {ev.crop}, "
        f"{ev.interpolation}, mean {ev.mean}, std {ev.std}",
    ]
    if entry.checkpoint:
        ckpt = entry.checkpoint
        cached = cache_dir() / ckpt.filename
        lines += [f"  checkpoint     {ckpt.filename} (sha256 {ckpt.sha256_prefix}…, {ckpt.trained_with})",
                  *[f"    url          {url}" for url in ckpt.urls],
                  *[f"    hf-hub       {hub.spec} ({hub.filename} @ {hub.revision}, {hub.keys} keys; another copy)"
                    for hub in ckpt.hub_files],
                  f"    cache        {cached} ({'present' if cached.is_file() else 'not downloaded'})"]
    else:
        lines.append("  checkpoint     none released; pass pretrained='/path/or/url.pth'")
    return "\n".join(lines)
