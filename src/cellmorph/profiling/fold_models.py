"""Embedding with a leave-one-out run's fold models: every tile by the model that never saw it.

A MoA-supervised network's penultimate layer is a profile like any other, but only for images
its training never saw: the tiles of compound ``c`` are embedded by the fold model that held
``c`` out. Rows of no fold (controls, unlabelled compounds) were in no model's training set
and go to one of them (``weights``).

The fold models share an architecture and a starting point but not a feature space, so each
model's features are put on a common footing on every plate: centred on the controls that
model embedded there, and divided by their root-mean-square spread (one number per model and
plate, so the features' relative scales stay as the model made them; ``cellmorph evaluate``
standardises per feature afterwards, as for any profile).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.backbones import load_weights
from cellmorph.errors import CellmorphError
from cellmorph.profiling.features import TileEmbedder


class FoldEmbedders:
    """Tiles -> features, each tile by the model of its ``column`` value (see the module).

    ``make`` gives the embedder of a weights file; :func:`swapping_weights` makes one that
    loads each file into a single network (milliseconds, where building a network and
    folding its BatchNorm costs about a second, and the same folds recur plate after plate).
    """

    def __init__(self, make: Callable[[Path], TileEmbedder], models: Mapping[str, Path | str],
                 default: Path | str, column: str, mode: str = "rgb") -> None:
        self.make, self.models, self.default, self.column = make, dict(models), default, column
        self.mode = mode  # rgb: stains as colours, as fine-tuned models were trained
        # The fold whose model embeds rows of no fold: named after that model's held-out value.
        self.default_fold = next((k for k, v in self.models.items()
                                  if str(v) == str(default)), "")

    def routes(self, table: pd.DataFrame) -> np.ndarray:
        """The fold (held-out value) whose model embeds each row."""
        values = table[self.column].astype(str).to_numpy()
        own = np.isin(values, list(self.models)) & ~sc.is_control(table).to_numpy()
        return np.where(own, values, self.default_fold)

    def __call__(self, tiles: np.ndarray, batch_size: int = 64, *,
                 table: pd.DataFrame) -> np.ndarray:
        """Features of ``tiles`` (one plate's; ``table`` their rows), standardised per model
        against the plate's controls."""
        controls = sc.is_control(table).to_numpy()
        if not controls.any():
            raise CellmorphError(f"plate {table[sc.PLATE].iloc[0]}: no control tiles; fold "
                                 "models' embeddings are centred on each plate's controls "
                                 "(DMSO), so every plate needs some")
        routes = self.routes(table)
        out: np.ndarray | None = None
        for fold in np.unique(routes):
            mine = routes == fold
            embedder = self.make(Path(self.models.get(fold, self.default)))
            chosen = np.flatnonzero(mine | controls)
            feats = embedder(tiles[chosen], batch_size=batch_size)
            feats = standardise_on(feats, controls[chosen])
            if out is None:
                out = np.zeros((len(tiles), feats.shape[1]), np.float32)
            out[chosen[mine[chosen]]] = feats[mine[chosen]]
        assert out is not None  # a plate has tiles when it is embedded
        return out


def swapping_weights(embedder: TileEmbedder) -> Callable[[Path], TileEmbedder]:
    """``make`` for :class:`FoldEmbedders`: ``embedder`` with a weights file's weights loaded
    into its network (an unfolded one: folded BatchNorm would bake one model's statistics
    into the convolutions)."""
    loaded: list[Path] = []

    def make(weights: Path) -> TileEmbedder:
        if loaded != [weights]:
            load_weights(embedder.model, weights)
            loaded[:] = [weights]
        return embedder

    return make


def standardise_on(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``features`` centred on the mean of the ``reference`` rows and divided by their
    root-mean-square spread over all features (a floor keeps a constant model finite).

    >>> x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    >>> standardise_on(x, np.array([True, True, False])).round(2).tolist()
    [[-1.0, -1.0], [1.0, 1.0], [3.0, 6.0]]
    """
    ref = features[reference]
    centred = features - ref.mean(axis=0)
    spread = float(np.sqrt(np.mean((ref - ref.mean(axis=0)) ** 2)))
    return (centred / max(spread, 1e-6)).astype(np.float32)
