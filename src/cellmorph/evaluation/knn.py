"""Treatment-level 1-nearest-neighbour MoA accuracy with NSC and NSCB hold-outs.

NSC (not same compound): a treatment's neighbours never include another concentration of
its own compound. NSCB additionally excludes treatments of the same batch (Ando et al.
2017). MoAs that can never be matched are left out entirely (as queries and as
references) and the result lists them: under NSC, MoAs with a single compound; under NSCB
also MoAs whose compounds all sit in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.records import ShortRepr
from cellmorph.schema import to_matrix


@dataclass(repr=False)
class NNResult(ShortRepr):
    """Outcome of one 1-NN evaluation."""

    holdout: str
    metric: str
    accuracy: float
    n_treatments: int
    predictions: pd.DataFrame
    dropped_moas: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready summary (without the per-treatment table)."""
        per_moa = self.predictions.groupby(sc.MOA)["correct"].mean().round(4).to_dict()
        return {"holdout": self.holdout, "metric": self.metric, "accuracy": self.accuracy,
                "n_treatments": self.n_treatments, "dropped_moas": self.dropped_moas,
                "per_moa_accuracy": per_moa}


def single_batch_moas(treatments: pd.DataFrame) -> list[str]:
    """MoAs all of whose treatments sit in one batch."""
    n = treatments.groupby(sc.MOA)[sc.BATCH].nunique()
    return sorted(n.index[n <= 1])


def single_compound_moas(treatments: pd.DataFrame) -> list[str]:
    """MoAs with one compound: no other compound can match them under NSC."""
    n_comp = treatments.groupby(sc.MOA)[sc.COMPOUND].nunique()
    return sorted(n_comp.index[n_comp < 2])


def nn_accuracy(treatments: pd.DataFrame, *, metric: str = "cosine",
                holdout: str = "nsc") -> NNResult:
    """1-NN MoA accuracy over labelled treatment profiles (one row per treatment)."""
    if holdout not in ("nsc", "nscb"):
        raise CellmorphError(f"unknown hold-out {holdout!r}: nsc or nscb")
    df = sc.treatments(treatments).reset_index(drop=True)
    if df.empty:
        raise CellmorphError("no labelled treatment profiles to evaluate")
    dropped = single_compound_moas(df)
    if holdout == "nscb":
        dropped = sorted(set(dropped) | set(single_batch_moas(df)))
    df = df[~df[sc.MOA].isin(dropped)].reset_index(drop=True)
    if df.empty:
        raise CellmorphError(f"no MoA can be matched under {holdout.upper()}: every MoA has a "
                             "single compound" + (" or a single batch" if holdout == "nscb"
                                                  else "") + "; include at least two compounds "
                             "per MoA")
    if df[sc.MOA].nunique() < 2:
        raise CellmorphError(
            f"only one MoA ({df[sc.MOA].iloc[0]}) can be matched under {holdout.upper()} once "
            f"MoAs that cannot be matched are left out ({', '.join(dropped)}): a 1-NN among "
            "one MoA is always right, so no accuracy is reported; include at least two "
            "compounds (and, for NSCB, two batches) in at least two MoAs")
    X = to_matrix(df)
    dist = cdist(X, X, metric=metric)
    compound = df[sc.COMPOUND].to_numpy()
    excluded = compound[:, None] == compound[None, :]
    if holdout == "nscb":
        batch = df[sc.BATCH].to_numpy()
        excluded |= batch[:, None] == batch[None, :]
    dist = np.where(excluded, np.inf, dist)
    has_ref = np.isfinite(dist).any(axis=1)
    nearest = np.argmin(dist, axis=1)
    moa = df[sc.MOA].to_numpy()
    pred = np.where(has_ref, moa[nearest], None)
    out = df[[c for c in (sc.TREATMENT, sc.COMPOUND, sc.CONCENTRATION, sc.MOA, sc.BATCH)
              if c in df.columns]].copy()
    out["predicted"] = pred
    out["neighbour"] = np.where(has_ref, df[sc.TREATMENT].to_numpy()[nearest], None)
    out["distance"] = np.where(has_ref, dist[np.arange(len(df)), nearest], np.nan)
    out["correct"] = out["predicted"] == out[sc.MOA]
    acc = float(out["correct"].mean())
    return NNResult(holdout, metric, acc, len(out), out, dropped)
