"""Replicate reproducibility: percent replicating, as the JUMP consortium defines it (Way et
al. 2022; Chandrasekaran et al. 2023, ``corr_between_replicates`` /
``corr_between_non_replicates`` / ``percent_score`` in their code).

For each treatment, the median Pearson correlation between the profiles of its replicate
wells; the null is the same statistic for groups of as many wells drawn at random from
different treatments. A treatment *replicates* when its correlation exceeds the null's 95th
percentile; percent replicating is the share that do. Controls are left out of both.
Written here because neither pycytominer nor copairs computes it (copairs' mAP is the
rank-based twin, reported beside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.records import ShortRepr


def median_correlation(profiles: np.ndarray) -> float:
    """The median Pearson correlation over the distinct pairs of rows (NaN for one row).

    >>> rows = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [3.0, 2.0, 1.0]])
    >>> round(median_correlation(rows), 3)  # pairs: 0.982, -1, -0.982
    -0.982
    """
    if len(profiles) < 2:
        return float("nan")
    corr = np.corrcoef(profiles)
    return float(np.median(corr[np.triu_indices(len(profiles), k=1)]))


def replicate_correlations(wells: pd.DataFrame, group: str = sc.TREATMENT) -> pd.DataFrame:
    """Per treated group with two wells or more: its number of wells and the median
    correlation between them."""
    treated = wells[~sc.is_control(wells)]
    feats = sc.feature_columns(treated)
    rows = [{group: name, "n_wells": len(g),
             "replicate_correlation": median_correlation(g[feats].to_numpy(np.float64))}
            for name, g in treated.groupby(group, sort=True) if len(g) >= 2]
    return pd.DataFrame(rows, columns=[group, "n_wells", "replicate_correlation"])


def null_correlations(wells: pd.DataFrame, n_replicates: int, *, group: str = sc.TREATMENT,
                      n_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """The median correlation of ``n_samples`` groups of ``n_replicates`` treated wells, each
    group drawn from as many different treatments."""
    treated = wells[~sc.is_control(wells)]
    values = treated[sc.feature_columns(treated)].to_numpy(np.float64)
    labels = treated[group].astype(str).to_numpy()
    if len(set(labels)) < n_replicates:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_samples:
        pick = rng.choice(len(values), size=n_replicates, replace=False)
        if len(set(labels[pick])) == n_replicates:
            out.append(median_correlation(values[pick]))
    return np.asarray(out)


@dataclass(repr=False)
class ReplicateResult(ShortRepr):
    """Percent replicating and what it rests on."""

    table: pd.DataFrame  # per treatment: wells, replicate correlation, replicating
    threshold: float  # the null's 95th percentile
    n_replicates: int  # wells in each null group (the commonest number of replicates)
    null: np.ndarray

    @property
    def percent(self) -> float:
        """Share of the treatments that replicate (0-1)."""
        return float(self.table["replicating"].mean()) if len(self.table) else float("nan")


def percent_replicating(wells: pd.DataFrame, *, group: str = sc.TREATMENT,
                        n_samples: int = 1000, quantile: float = 0.95,
                        seed: int = 0) -> ReplicateResult | None:
    """Percent replicating of a screen's treated wells (see the module); None when no
    treatment has two wells or there are too few treatments for a null.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.normal(size=(6, 20))  # six treatments, each its own profile
    >>> values = np.repeat(signal, 3, axis=0) + rng.normal(0, 0.3, (18, 20))
    >>> wells = pd.DataFrame(values, columns=[f"Feature_{i}" for i in range(20)]).assign(
    ...     Metadata_Treatment=np.repeat(list("abcdef"), 3), Metadata_Role="unlabelled")
    >>> percent_replicating(wells).percent
    1.0
    """
    table = replicate_correlations(wells, group)
    if table.empty:
        return None
    n_replicates = int(table["n_wells"].mode().min())
    null = null_correlations(wells, n_replicates, group=group, n_samples=n_samples, seed=seed)
    if not len(null):
        return None
    threshold = float(np.nanpercentile(null, quantile * 100))
    table["replicating"] = table["replicate_correlation"] > threshold
    return ReplicateResult(table, threshold, n_replicates, null)
