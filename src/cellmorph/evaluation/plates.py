"""Plate views: where on each plate a readout sits, whether the plate's edge differs from its
inside, and how far the positive controls a user names stand from DMSO (Z').

Wells are placed by name (``B07``: row B, column 7) on the smallest standard format that
holds them (96, 384 or 1536 wells), so the edge is the plate's physical edge even where the
outer wells hold no sample. The edge effect compares the edge wells (outer rows and
columns) with the inner ones: the difference of their medians and a Mann-Whitney test
(scipy), per plate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.activity import DISTANCE_TO_CONTROLS, distance_to_controls
from cellmorph.records import ShortRepr

FORMATS = ((8, 12), (16, 24), (32, 48))  # rows, columns of 96-, 384- and 1536-well plates
_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,2})$")


def well_position(well: str) -> tuple[int, int]:
    """Zero-based (row, column) of a well name.

    >>> well_position("B07"), well_position("AF48")
    ((1, 6), (31, 47))
    """
    match = _WELL.match(str(well).strip())
    if match is None:
        raise CellmorphError(f"well {well!r} is not a plate position (a row letter and a "
                             "column number, as B07); plate views need well names")
    letters, column = match.group(1).upper(), int(match.group(2))
    row = 0
    for letter in letters:
        row = row * 26 + ord(letter) - ord("A") + 1
    return row - 1, column - 1


def plate_format(wells: Sequence[str]) -> tuple[int, int]:
    """The smallest standard plate (rows, columns) that holds every well."""
    positions = [well_position(w) for w in wells]
    rows = max(r for r, _ in positions) + 1
    cols = max(c for _, c in positions) + 1
    for shape in FORMATS:
        if rows <= shape[0] and cols <= shape[1]:
            return shape
    raise CellmorphError(f"wells up to row {rows} and column {cols}: no standard plate "
                         "holds them")


def plate_grid(wells: pd.DataFrame, value: str) -> np.ndarray:
    """One plate's ``value`` on its layout (NaN where a well has none; the mean of a well's
    rows where it has several)."""
    shape = plate_format(wells[sc.WELL])
    grid = np.full(shape, np.nan)
    for well, v in wells.groupby(sc.WELL)[value].mean().items():
        grid[well_position(str(well))] = v
    return grid


def edge_effect(wells: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per plate: the median of ``value`` in the edge and the inner wells, their difference,
    and the Mann-Whitney p-value (NaN with fewer than 3 wells on a side).

    Examples
    --------
    >>> names = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]
    >>> wells = pd.DataFrame({"Metadata_Plate": "P", "Metadata_Well": names,
    ...                       "x": [2.0 if n[0] in "AH" or n[1:] in ("01", "12") else 1.0
    ...                             for n in names]})
    >>> edge_effect(wells, "x")[["edge_median", "inner_median", "difference"]].values.tolist()
    [[2.0, 1.0, 1.0]]
    """
    rows = []
    for plate, group in wells.dropna(subset=[value]).groupby(sc.PLATE, sort=True):
        n_rows, n_cols = plate_format(group[sc.WELL])
        positions = np.array([well_position(w) for w in group[sc.WELL]])
        edge = ((positions[:, 0] == 0) | (positions[:, 0] == n_rows - 1)
                | (positions[:, 1] == 0) | (positions[:, 1] == n_cols - 1))
        outer, inner = group[value].to_numpy(float)[edge], group[value].to_numpy(float)[~edge]
        p = (float(mannwhitneyu(outer, inner).pvalue) if min(len(outer), len(inner)) >= 3
             else float("nan"))
        rows.append({sc.PLATE: plate, "n_edge": int(len(outer)), "n_inner": int(len(inner)),
                     "edge_median": float(np.median(outer)) if len(outer) else np.nan,
                     "inner_median": float(np.median(inner)) if len(inner) else np.nan,
                     "p_value": p})
    table = pd.DataFrame(rows, columns=[sc.PLATE, "n_edge", "n_inner", "edge_median",
                                        "inner_median", "p_value"])
    table.insert(5, "difference", table["edge_median"] - table["inner_median"])
    return table


def z_prime(positive: np.ndarray, negative: np.ndarray) -> float:
    """Zhang et al. 1999: 1 - 3 (sd+ + sd-) / |mean+ - mean-| (above 0.5: an excellent
    assay; below 0: the controls' distributions overlap).

    >>> round(z_prime(np.array([9.0, 10.0, 11.0]), np.array([0.0, 1.0, 2.0])), 3)
    0.333
    """
    gap = abs(positive.mean() - negative.mean())
    if gap == 0:
        return float("-inf")
    return float(1 - 3 * (positive.std(ddof=1) + negative.std(ddof=1)) / gap)


def control_z_prime(wells: pd.DataFrame, value: str, positives: Sequence[str]) -> pd.DataFrame:
    """Z' of ``value`` between the wells of the named positive-control compounds and the
    negative controls, per plate and over all plates (``Metadata_Plate`` = ``all``); a plate
    with fewer than two wells on a side gets NaN."""
    unknown = sorted(set(positives) - set(wells[sc.COMPOUND].astype(str)))
    if unknown:
        raise CellmorphError(f"positive control(s) {unknown} are no compound of the screen "
                             "(positive_controls names compounds as the index spells them)")
    is_pos = wells[sc.COMPOUND].astype(str).isin(list(positives)).to_numpy()
    is_neg = sc.is_control(wells).to_numpy()
    groups = [*wells.groupby(sc.PLATE, sort=True).indices.items(),
              ("all", np.arange(len(wells)))]
    rows = []
    for plate, idx in groups:
        pos = wells[value].to_numpy(float)[idx][is_pos[idx]]
        neg = wells[value].to_numpy(float)[idx][is_neg[idx]]
        rows.append({sc.PLATE: plate, "n_positive": int(len(pos)), "n_negative": int(len(neg)),
                     "z_prime": z_prime(pos, neg) if min(len(pos), len(neg)) >= 2
                     else float("nan")})
    return pd.DataFrame(rows)


@dataclass(repr=False)
class PlateViews(ShortRepr):
    """Every well's activity (its distance to its plate's controls, the controls' own
    included), each plate's edge effect, and the positive controls' Z' where named."""

    activity: pd.DataFrame
    edges: pd.DataFrame
    z_prime: pd.DataFrame | None = None

    def summary(self) -> dict:
        """Plates with an edge effect (p < 0.05) and the overall Z', for metrics.json."""
        out: dict = {"plates": int(len(self.edges)),
                     "edge_effect_plates": self.edges.loc[
                         self.edges["p_value"] < 0.05, sc.PLATE].astype(str).tolist()}
        if self.z_prime is not None:
            overall = self.z_prime[self.z_prime[sc.PLATE] == "all"]["z_prime"]
            out["z_prime"] = float(overall.iloc[0])
        return out


def plate_views(wells: pd.DataFrame, positive_controls: Sequence[str] = ()) -> PlateViews:
    """The plate views of normalised well profiles (``distance_to_controls`` for every
    well; see the module)."""
    activity = distance_to_controls(wells, controls_too=True)
    z = (control_z_prime(activity, DISTANCE_TO_CONTROLS, positive_controls)
         if positive_controls else None)
    return PlateViews(activity, edge_effect(activity, DISTANCE_TO_CONTROLS), z)
