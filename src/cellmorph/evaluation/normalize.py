"""Normalisation and batch correction fitted on negative controls only (no label leakage).

Transformers follow scikit-learn's fit/transform; the table-level functions follow
pycytominer's call shape (profiles in, profiles out, ``Metadata_`` columns untouched).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger
from cellmorph.schema import feature_columns, metadata_columns

log = get_logger(__name__)


class Sphering(BaseEstimator, TransformerMixin):
    """Typical variation normalisation (TVN, Ando et al. 2017): whiten with the controls' PCA.

    ``epsilon`` regularises small control variances so noise directions are not blown up.
    """

    def __init__(self, epsilon: float = 1e-2) -> None:
        self.epsilon = epsilon

    def fit(self, X: np.ndarray, y: None = None) -> Sphering:  # noqa: N803 (sklearn API)
        """Learn the controls' mean and whitening from control profiles ``X``."""
        self.mean_ = X.mean(axis=0)
        cov = np.cov(X - self.mean_, rowvar=False)
        evals, evecs = np.linalg.eigh(np.atleast_2d(cov))
        self.components_ = evecs
        self.scale_ = 1.0 / np.sqrt(np.maximum(evals, 0) + self.epsilon)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 (sklearn API)
        """Centre on the controls and whiten."""
        return ((X - self.mean_) @ self.components_) * self.scale_


def drop_unusable_features(profiles: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop constant and all-NaN features; returns the table and the dropped names."""
    feats = feature_columns(profiles)
    values = profiles[feats]
    std = values.std(ddof=0)
    dropped = [c for c in feats if not np.isfinite(std[c]) or std[c] == 0]
    return profiles.drop(columns=dropped), dropped


def check_missing(profiles: pd.DataFrame, drop: bool) -> pd.DataFrame:
    """Stop on rows with NaN/inf features (naming the first), or drop them if ``drop``."""
    feats = feature_columns(profiles)
    bad = ~np.isfinite(profiles[feats].to_numpy(np.float64)).all(axis=1)
    if bad.any():
        first = profiles.loc[bad, [sc.PLATE, sc.WELL]].iloc[0].tolist()
        if not drop:
            raise CellmorphError(f"{int(bad.sum())} profiles have missing or infinite features "
                                 f"(first: plate/well {first}); fix them or set "
                                 "drop_nan_rows: true to leave them out")
        log.warning("%d profiles with missing features left out (first: %s)", int(bad.sum()),
                    first)
    return profiles.loc[~bad].reset_index(drop=True)


def normalize(profiles: pd.DataFrame, *, method: str = "standardize", by: str = "plate",
              control_role: str = sc.ROLE_CONTROL) -> pd.DataFrame:
    """Standardise features against the control wells.

    ``method``: ``standardize`` uses the controls' mean and std; ``robust`` their median and
    1.4826 x MAD; ``none`` leaves the table as it is.
    ``by``: ``plate`` centres and scales each plate by its own controls; ``global`` uses all
    controls together; ``plate-center`` centres each plate on its own controls and scales by
    the spread of all controls pooled (after centring), which removes plate offsets without
    trusting a scale estimated from a plate's few control wells.
    """
    if method == "none":
        return profiles
    if method not in ("standardize", "robust"):
        raise CellmorphError(f"unknown normalisation {method!r}: standardize, robust, none")
    if by not in ("plate", "global", "plate-center"):
        raise CellmorphError(f"unknown normalize_by {by!r}: plate, global, plate-center")
    feats = feature_columns(profiles)
    values = profiles[feats].to_numpy(np.float64)
    is_ctl = (profiles[sc.ROLE] == control_role).to_numpy()
    groups = (profiles.groupby(sc.PLATE).indices.items() if by != "global"
              else [("all", np.arange(len(profiles)))])
    out = values.copy()
    for name, idx in groups:
        ctl = values[idx][is_ctl[idx]]
        if len(ctl) < 2 and by == "global":
            raise CellmorphError(f"the table has {len(ctl)} control well(s); normalisation "
                                 "needs at least 2 (--normalize none; normalize: none in a "
                                 "config or in Python)")
        if len(ctl) < 2:
            raise CellmorphError(
                f"plate {name} has {len(ctl)} control well(s); normalising each plate on its "
                "own controls needs at least 2 on every plate: normalise over all plates "
                "instead (--normalize-by global; normalize_by: global in a config or in "
                "Python) or not at all (--normalize none)")
        centre, spread = _centre_spread(ctl, method)
        out[idx] = (values[idx] - centre) / (spread if by != "plate-center" else 1.0)
    if by == "plate-center":
        _, spread = _centre_spread(out[is_ctl], method)
        out = out / spread
    meta = [c for c in profiles.columns if c not in feats]
    return pd.concat([profiles[meta], pd.DataFrame(out, columns=feats, index=profiles.index)],
                     axis=1)


def _centre_spread(ctl: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method == "standardize":
        centre, spread = ctl.mean(0), ctl.std(0)
    else:
        centre = np.median(ctl, 0)
        spread = 1.4826 * np.median(np.abs(ctl - centre), 0)
    # Features with no spread in the controls are centred but not scaled.
    return centre, np.where(spread > 1e-12, spread, 1.0)


def sphere(profiles: pd.DataFrame, *, epsilon: float = 1e-2,
           control_role: str = sc.ROLE_CONTROL) -> pd.DataFrame:
    """TVN: whiten all profiles with a :class:`Sphering` fitted on the control wells."""
    feats = feature_columns(profiles)
    ctl = profiles[profiles[sc.ROLE] == control_role][feats].to_numpy(np.float64)
    if len(ctl) < 3:
        raise CellmorphError(f"sphering needs control wells; found {len(ctl)}")
    model = Sphering(epsilon).fit(ctl)
    return _replace_features(profiles, model.transform(profiles[feats].to_numpy(np.float64)),
                             "Feature_TVN")


def reduce_pca(profiles: pd.DataFrame, n_components: int, *,
               control_role: str = sc.ROLE_CONTROL, seed: int = 0) -> pd.DataFrame:
    """Project on the first principal components of the control wells."""
    feats = feature_columns(profiles)
    ctl = profiles[profiles[sc.ROLE] == control_role][feats].to_numpy(np.float64)
    n = min(n_components, len(feats), max(1, len(ctl) - 1))
    model = PCA(n_components=n, random_state=seed).fit(ctl)
    return _replace_features(profiles, model.transform(profiles[feats].to_numpy(np.float64)),
                             "Feature_PC")


def _replace_features(profiles: pd.DataFrame, values: np.ndarray, prefix: str) -> pd.DataFrame:
    meta = profiles[metadata_columns(profiles)]
    cols = [f"{prefix}{i:04d}" for i in range(values.shape[1])]
    return pd.concat([meta.reset_index(drop=True), pd.DataFrame(values, columns=cols)], axis=1)
