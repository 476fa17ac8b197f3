"""Figures, written atomically as PNG.

Built on matplotlib's object-oriented API (``Figure``, no pyplot): no global backend or
state, safe in notebooks and threads. Every figure made from SYNTHETIC data says so across
its face (``synthetic=True``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cellmorph.atomic import atomic_path

COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
           "#8c8c8c", "#ccb974", "#64b5cd", "#1f77b4", "#ff7f0e"]


def stamp_synthetic(fig: Figure) -> None:
    """Write SYNTHETIC across a figure (data from procedurally drawn cells)."""
    fig.text(0.5, 0.5, "SYNTHETIC", transform=fig.transFigure, fontsize=34, color="#c0392b",
             alpha=0.22, rotation=25, ha="center", va="center", fontweight="bold", zorder=100)


def png_bytes(fig: Figure, synthetic: bool = False) -> bytes:
    """The figure as PNG bytes."""
    if synthetic:
        stamp_synthetic(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def save(fig: Figure, path: Path | str | None, synthetic: bool = False) -> Path | Figure:
    """Write a figure as PNG, atomically; with no path, return the figure (stamped) instead,
    for a notebook to show."""
    if path is None:
        if synthetic:
            stamp_synthetic(fig)
        return fig
    data = png_bytes(fig, synthetic)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def plot_confusion(cm: pd.DataFrame, title: str, path: Path | str | None, *,
                   synthetic: bool = False) -> Path | Figure:
    """A confusion matrix (rows true, columns predicted), with counts in the cells."""
    n = len(cm)
    fig = Figure(figsize=(2.5 + 0.45 * n, 2 + 0.45 * n))
    ax = fig.subplots()
    values = cm.to_numpy()
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(n), cm.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), cm.index, fontsize=8)
    for i in range(n):
        for j in range(n):
            if values[i, j]:
                ax.text(j, i, int(values[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] > values.max() / 2 else "black")
    ax.set_xlabel("predicted MoA")
    ax.set_ylabel("true MoA")
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_bars(values: Mapping[str, float], title: str, ylabel: str, path: Path | str | None,
              errors: Mapping[str, float | None] | None = None, chance: float | None = None, *,
              points: Mapping[str, Sequence[float]] | None = None,
              pvalues: Mapping[str, float] | None = None, threshold: float = 0.05,
              top: float | None = 1.08, synthetic: bool = False) -> Path | Figure:
    """A labelled bar chart: optional ± error bars (SEM), each replicate's value as a dot,
    stars for p-values below ``threshold``, and a chance line. The y axis runs from 0 to
    ``top`` (fractions: 1.08), or to what the bars need with ``top=None`` (counts)."""
    names = list(values)
    fig = Figure(figsize=(1.4 + 0.55 * len(names), 3.4))
    ax = fig.subplots()
    yerr = None
    if errors and any(errors.get(k) is not None for k in names):
        yerr = [errors.get(k) or 0 for k in names]
    ax.bar(range(len(names)), [values[k] for k in names], yerr=yerr, capsize=3,
           color="#4c72b0", alpha=0.85, label="mean ± SEM" if yerr else None)
    if points:
        for i, k in enumerate(names):
            ys = list(points.get(k, []))
            if ys:
                xs = i + np.linspace(-0.18, 0.18, len(ys)) if len(ys) > 1 else [i]
                ax.scatter(xs, ys, s=14, color="black", zorder=3,
                           label="each seed" if i == 0 else None)
    if pvalues:
        for i, k in enumerate(names):
            p = pvalues.get(k)
            if p is not None and p < threshold:
                stars = "***" if p < 0.001 else "**" if p < 0.01 else "*"
                ax.text(i, min(values[k] + 0.03, 1.0), stars, ha="center", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    if chance is not None:
        ax.axhline(chance, ls="--", color="grey", lw=1, label="chance")
    if chance is not None or points or yerr:
        ax.legend(fontsize=7, loc="lower right" if top is not None else "best")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top)
    if pvalues:
        title += f"\n* p < {threshold:g}, ** p < 0.01, *** p < 0.001 (corrected permutation test)"
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_curves(curves: Mapping[str, Sequence[float]], title: str, xlabel: str, ylabel: str,
                path: Path | str | None, bands: Mapping[str, Sequence[float | None]] | None = None,
                *, chance: float | None = None, synthetic: bool = False) -> Path | Figure:
    """Lines over a shared integer x axis (e.g. accuracy per epoch), optional ± bands and a
    chance line."""
    fig = Figure(figsize=(5, 3.3))
    ax = fig.subplots()
    longest = 1
    for name, ys in curves.items():
        xs = np.arange(1, len(ys) + 1)
        longest = max(longest, len(ys))
        ax.plot(xs, ys, marker="o", ms=3, label=name)
        if bands and name in bands and all(v is not None for v in bands[name]):
            b = np.asarray(bands[name], dtype=float)
            ax.fill_between(xs, np.asarray(ys) - b, np.asarray(ys) + b, alpha=0.2)
    if chance is not None:
        ax.axhline(chance, ls="--", color="grey", lw=1, label="chance")
    ax.set_xticks(np.arange(1, longest + 1))
    ax.set_xlim(0.5, longest + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_dose_response(wells: pd.DataFrame, value: str, path: Path | str | None, *,
                       group: str = "Metadata_CellLine", title: str = "",
                       synthetic: bool = False) -> Path | Figure:
    """A readout against concentration (log scale), one line per group (cell line)."""
    fig = Figure(figsize=(5, 3.3))
    ax = fig.subplots()
    groups = wells.groupby(group) if group in wells.columns else [("all", wells)]
    for i, (name, g) in enumerate(groups):
        g = g.sort_values("Metadata_Concentration")
        ax.plot(g["Metadata_Concentration"], g[value], marker="o", ms=3, lw=1,
                color=COLOURS[i % len(COLOURS)], label=str(name))
    if (wells["Metadata_Concentration"] > 0).all():
        ax.set_xscale("log")
    ax.axhline(1.0, ls=":", color="grey", lw=1)
    ax.set_xlabel("concentration")
    ax.set_ylabel(value.removeprefix("Feature_"))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_potency(wells: pd.DataFrame, fits: pd.DataFrame, value: str,
                 path: Path | str | None, *, title: str = "", max_panels: int = 24,
                 synthetic: bool = False) -> Path | Figure:
    """Small multiples: each fitted compound's wells (readout against dose, log scale), its
    four-parameter logistic, and its EC50 with the interval shaded; flat and failed series
    drawn as points only, and said so. The most potent first."""
    from cellmorph.evaluation.potency import hill

    shown = fits.assign(_order=fits["ec50"].fillna(np.inf)).sort_values("_order")
    shown = shown.head(max_panels)
    cols = min(6, max(1, len(shown)))
    rows = int(np.ceil(len(shown) / cols))
    fig = Figure(figsize=(2.1 * cols, 1.8 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (_, fit) in zip(axes, shown.iterrows(), strict=False):
        mine = wells[(wells["Metadata_Compound"] == fit["Metadata_Compound"])
                     & (wells["Metadata_Concentration"] > 0)]
        ax.scatter(mine["Metadata_Concentration"], mine[value], s=6, color=COLOURS[0])
        ax.set_xscale("log")
        label = str(fit["Metadata_Compound"])[:18]
        if fit["fit"] == "ok":
            grid = np.logspace(np.log10(mine["Metadata_Concentration"].min()),
                               np.log10(mine["Metadata_Concentration"].max()), 60)
            ax.plot(grid, hill(np.log10(grid), fit["bottom"], fit["top"],
                               np.log10(fit["ec50"]), fit["hill"]), color=COLOURS[1], lw=1)
            ax.axvspan(fit["ec50_low"], fit["ec50_high"], color=COLOURS[1], alpha=0.15)
            ax.axvline(fit["ec50"], color=COLOURS[1], lw=0.8, ls="--")
            label += f"\nEC50 {fit['ec50']:.3g}"
        else:
            label += f"\n{fit['fit']}"
        ax.set_title(label, fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path, synthetic)


def plot_replicates(replicate: Sequence[float], null: Sequence[float], threshold: float,
                    path: Path | str | None, *, title: str = "",
                    synthetic: bool = False) -> Path | Figure:
    """Replicate correlations beside the null of non-replicates, with the threshold (the
    JUMP consortium's percent-replicating plot)."""
    fig = Figure(figsize=(5, 3.0))
    ax = fig.subplots()
    bins = np.linspace(min(np.nanmin(null), np.nanmin(replicate)), 1.0, 40)
    ax.hist(null, bins=bins, density=True, alpha=0.5, color=COLOURS[7], label="non-replicates")
    ax.hist(replicate, bins=bins, density=True, alpha=0.6, color=COLOURS[0],
            label="replicates")
    ax.axvline(threshold, color=COLOURS[3], ls="--", lw=1, label="95th percentile of null")
    ax.set_xlabel("median correlation between wells")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_plates(grids: Mapping[str, np.ndarray], path: Path | str | None, *,
                marks: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                max_plates: int = 24, synthetic: bool = False) -> Path | Figure:
    """One heatmap per plate (wells in their rows and columns), on a shared colour scale;
    ``marks``: (row, column) of wells to cross out on each plate (QC-flagged fields)."""
    names = list(grids)[:max_plates]
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig = Figure(figsize=(3.0 * cols, 2.2 * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    values = np.concatenate([g.ravel() for g in grids.values()])
    vmax = float(np.nanpercentile(values, 98)) if np.isfinite(values).any() else 1.0
    image = None
    for ax, name in zip(axes, names, strict=False):
        grid = grids[name]
        image = ax.imshow(grid, cmap="magma", vmin=0, vmax=vmax, aspect="auto")
        crossed = (marks or {}).get(name, [])
        if crossed:
            rows_, cols_ = zip(*crossed, strict=True)
            ax.scatter(cols_, rows_, marker="x", s=14, color="#2ecc71", linewidths=1)
        ax.set_title(name[:28], fontsize=7)
        ax.set_xticks(range(0, grid.shape[1], max(1, grid.shape[1] // 6)))
        ax.set_xticklabels([str(c + 1) for c in range(0, grid.shape[1],
                                                      max(1, grid.shape[1] // 6))], fontsize=6)
        ax.set_yticks(range(grid.shape[0]))
        ax.set_yticklabels([chr(ord("A") + r) if r < 26 else f"A{chr(ord('A') + r - 26)}"
                            for r in range(grid.shape[0])], fontsize=5)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:len(names)].tolist(), shrink=0.8,
                     label="distance to DMSO")
    if len(grids) > max_plates:
        fig.suptitle(f"the first {max_plates} of {len(grids)} plates", fontsize=8)
    return save(fig, path, synthetic)


def plot_embedding(coords: np.ndarray, labels: Sequence[str], path: Path | str | None, *,
                   title: str = "", synthetic: bool = False) -> Path | Figure:
    """A 2-D map of profiles, one colour per label (e.g. MoA)."""
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    labels = np.asarray(labels, dtype=object)
    for i, name in enumerate(sorted(set(labels))):
        sel = labels == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=18, color=COLOURS[i % len(COLOURS)],
                   label=str(name), alpha=0.85, edgecolors="none")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path | str | None, *,
                    columns: int = 4, title: str = "", cmap: str | None = None,
                    synthetic: bool = False) -> Path | Figure:
    """Images (H, W) or (H, W, 3) in [0, 1] on a grid, each with a small title."""
    n = max(1, len(images))
    rows = int(np.ceil(n / columns))
    fig = Figure(figsize=(2.1 * min(n, columns), 2.25 * rows + 0.3))
    axes = np.atleast_1d(fig.subplots(rows, min(n, columns), squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, name in zip(axes, images, titles, strict=False):
        ax.imshow(np.clip(img, 0, 1), cmap=cmap if np.ndim(img) == 2 else None, vmin=0, vmax=1)
        ax.set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_ranked(values: Sequence[float], significant: Sequence[bool], title: str, ylabel: str,
                path: Path | str | None, *, threshold: float = 0.05,
                synthetic: bool = False) -> Path | Figure:
    """Many scores (e.g. one mAP per treatment) ranked, significant ones highlighted."""
    order = np.argsort(values)[::-1]
    vals = np.asarray(values, dtype=float)[order]
    sig = np.asarray(significant, dtype=bool)[order]
    fig = Figure(figsize=(6, 3.3))
    ax = fig.subplots()
    xs = np.arange(len(vals))
    ax.bar(xs[sig], vals[sig], color="#4c72b0", width=1.0,
           label=f"significant (corrected p < {threshold:g})")
    ax.bar(xs[~sig], vals[~sig], color="#bbbbbb", width=1.0, label="not significant")
    ax.set_xlim(-0.5, len(vals) - 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"rank ({len(vals)} in all)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_coverage(validity: pd.DataFrame, efficiency: pd.DataFrame, path: Path | str | None, *,
                  title: str = "", synthetic: bool = False) -> Path | Figure:
    """Conformal validity (empirical vs nominal coverage, overall and per MoA) beside
    efficiency (mean prediction-set size)."""
    fig = Figure(figsize=(8, 3.3))
    ax, bx = fig.subplots(1, 2)
    overall = validity[validity["moa"] == "all"]
    per_moa = validity[validity["moa"] != "all"]
    ax.plot([0.5, 1], [0.5, 1], ls=":", color="grey", lw=1, label="nominal")
    ax.scatter(per_moa["confidence"], per_moa["coverage"], s=10, color="#bbbbbb",
               label="one MoA")
    ax.plot(overall["confidence"], overall["coverage"], marker="o", color="#4c72b0",
            label="all treatments")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence asked for")
    ax.set_ylabel("coverage (true MoA in the set)")
    ax.legend(fontsize=7)
    bx.bar([f"{c:.0%}" for c in efficiency["confidence"]], efficiency["mean_set_size"],
           color="#55a868", label="mean set size")
    bx.plot([f"{c:.0%}" for c in efficiency["confidence"]], efficiency["single_label_rate"],
            marker="o", color="black", label="single-label sets (rate)")
    bx.set_xlabel("confidence")
    bx.set_ylabel("MoAs in the set / rate")
    bx.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save(fig, path, synthetic)


def plot_reliability(before: pd.DataFrame, after: pd.DataFrame, path: Path | str | None, *,
                     ece: tuple[float, float], synthetic: bool = False) -> Path | Figure:
    """Reliability diagram: per bin of the top probability, accuracy against confidence,
    before and after calibration (dot area: treatments in the bin)."""
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfectly calibrated")
    for table, colour, label in ((before, "#c44e52", f"as predicted (ECE {ece[0]:.3f})"),
                                 (after, "#4c72b0", f"temperature-scaled (ECE {ece[1]:.3f})")):
        used = table[table["n"] > 0]
        ax.plot(used["confidence"], used["accuracy"], marker="o", color=colour, lw=1,
                label=label)
        ax.scatter(used["confidence"], used["accuracy"], s=12 * used["n"], color=colour,
                   alpha=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("top probability (bin mean)")
    ax.set_ylabel("accuracy in the bin")
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path, synthetic)


def field_thumbnail(field: np.ndarray, width: int = 96) -> bytes:
    """A field's stains (channels, height, width) as a small RGB PNG: each stain stretched
    between its 1st and 99.5th percentile; the first three shown blue, green and red (DAPI,
    tubulin, actin in BBBC021's order), a single stain as grey.

    Written here because a thumbnail needs no figure: Pillow encodes the array as it is.

    Examples
    --------
    >>> png = field_thumbnail(np.random.default_rng(0).random((3, 64, 80)), width=40)
    >>> png[:4] == b"\\x89PNG"
    True
    """
    from PIL import Image

    planes = np.asarray(field, dtype=np.float64)[:3]
    low = np.percentile(planes, 1, axis=(1, 2), keepdims=True)
    high = np.percentile(planes, 99.5, axis=(1, 2), keepdims=True)
    stretched = np.clip((planes - low) / np.maximum(high - low, 1e-12), 0, 1)
    rgb = np.zeros((3, *planes.shape[1:]))
    if len(stretched) == 1:
        rgb[:] = stretched[0]
    else:
        for plane, colour in zip(stretched, (2, 1, 0), strict=False):  # blue, green, red
            rgb[colour] = plane
    image = Image.fromarray((rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    height = max(1, round(image.height * width / image.width))
    buffer = io.BytesIO()
    image.resize((width, height), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()
