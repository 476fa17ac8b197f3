"""Matplotlib figures, written atomically as PNG (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cellmorph.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path | str) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: pd.DataFrame, title: str, path: Path | str) -> Path:
    """A confusion matrix (rows true, columns predicted), with counts in the cells."""
    n = len(cm)
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * n, 2 + 0.45 * n))
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
    return _save(fig, path)


def plot_bars(values: Mapping[str, float], title: str, ylabel: str, path: Path | str,
              errors: Mapping[str, float] | None = None, chance: float | None = None) -> Path:
    """A labelled bar chart, optional error bars and a chance line."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(names), 3.2))
    yerr = [errors.get(k, 0) for k in names] if errors else None
    ax.bar(range(len(names)), [values[k] for k in names], yerr=yerr, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    if chance is not None:
        ax.axhline(chance, ls="--", color="grey", lw=1, label="chance")
        ax.legend(fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_curves(curves: Mapping[str, Sequence[float]], title: str, xlabel: str, ylabel: str,
                path: Path | str, bands: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Lines over a shared x axis (e.g. accuracy per epoch), with optional +- bands."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in curves.items():
        xs = np.arange(1, len(ys) + 1)
        ax.plot(xs, ys, marker="o", ms=3, label=name)
        if bands and name in bands:
            b = np.asarray(bands[name])
            ax.fill_between(xs, np.asarray(ys) - b, np.asarray(ys) + b, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
