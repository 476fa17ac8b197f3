"""Normalisation fitted on controls only; sphering checked against scikit-learn's PCA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.normalize import (
    Sphering,
    check_missing,
    drop_unusable_features,
    normalize,
    sphere,
)


def _wells(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p, offset in (("P1", 0.0), ("P2", 5.0)):
        for w in range(8):
            role = sc.ROLE_CONTROL if w < 4 else sc.ROLE_TREATMENT
            rows.append({sc.PLATE: p, sc.WELL: f"A{w + 1:02d}", sc.ROLE: role,
                         **{f"f{k}": offset + rng.normal() * (k + 1) for k in range(3)}})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("by", ["plate", "global", "plate-center"])
def test_controls_become_standard(by: str) -> None:
    out = normalize(_wells(), by=by)
    ctl = out[out[sc.ROLE] == sc.ROLE_CONTROL]
    groups = ctl.groupby(sc.PLATE) if by == "plate" else [("all", ctl)]
    for _, g in groups:
        np.testing.assert_allclose(g[["f0", "f1", "f2"]].mean(), 0, atol=1e-9)
        np.testing.assert_allclose(g[["f0", "f1", "f2"]].std(ddof=0), 1, rtol=1e-9)


def test_no_leakage_from_treated_wells() -> None:
    """Changing a treated well changes only that well's normalised profile."""
    a = _wells()
    b = a.copy()
    b.loc[6, "f1"] += 100.0
    na, nb = normalize(a, by="plate"), normalize(b, by="plate")
    changed = ~np.isclose(na[["f0", "f1", "f2"]], nb[["f0", "f1", "f2"]]).all(axis=1)
    assert list(np.flatnonzero(changed)) == [6]


def test_robust_uses_median_and_mad() -> None:
    df = _wells()
    out = normalize(df, method="robust", by="global")
    ctl = df[df[sc.ROLE] == sc.ROLE_CONTROL]["f0"]
    mad = 1.4826 * np.median(np.abs(ctl - ctl.median()))
    np.testing.assert_allclose(out["f0"], (df["f0"] - ctl.median()) / mad)


def test_sphering_matches_pca_whitening() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4))
    ours = Sphering(epsilon=1e-12).fit(X).transform(X)
    ref = PCA(whiten=True).fit(X).transform(X)  # both use the (n - 1) covariance
    np.testing.assert_allclose(np.cov(ours, rowvar=False), np.eye(4), atol=1e-6)
    # Same whitened space up to the sign and order of the components.
    np.testing.assert_allclose(np.sort(np.abs(ours).sum(0)), np.sort(np.abs(ref).sum(0)), rtol=1e-6)
    table = sphere(_wells(), epsilon=1e-3)
    assert [c for c in table.columns if c.startswith("Feature_TVN")] == [
        "Feature_TVN0000", "Feature_TVN0001", "Feature_TVN0002"]


def test_missing_and_constant_features() -> None:
    df = _wells()
    df["const"] = 1.0
    df.loc[3, "f2"] = np.nan
    with pytest.raises(CellmorphError, match=r"1 profiles have missing .*\['P1', 'A04'\]"):
        check_missing(df, drop=False)
    assert len(check_missing(df, drop=True)) == len(df) - 1
    kept, dropped = drop_unusable_features(df.dropna())
    assert dropped == ["const"] and "const" not in kept.columns


def test_too_few_controls() -> None:
    df = _wells()
    df.loc[df[sc.PLATE] == "P2", sc.ROLE] = sc.ROLE_TREATMENT
    with pytest.raises(CellmorphError, match=r"plate P2 has 0 control well\(s\).*--normalize-by "):
        normalize(df, by="plate")
