"""Field quality control: each plate's fields measured against each other, flagged with the
reason, and (where asked) left out of the well profiles, never silently.

The measures come from the tile cache (:mod:`cellmorph.preprocess.quality`, per stain).
Within a plate, each measure becomes a robust z-score: (value - the plate's median) over
1.4826 times its median absolute deviation, with a floor on that spread so that a plate of
near-identical fields does not flag a hair's difference. A field is flagged

- ``blur``: its focus (log) is ``threshold`` robust SDs below the plate's, by the median
  over its stains (a defocused field is blurred in every stain);
- ``saturation``: any stain's saturated fraction is ``threshold`` robust SDs above the
  plate's and over 0.5 % of the field;
- ``empty``: its foreground fraction is ``threshold`` robust SDs below the plate's and
  under a tenth of the plate's median, by the median over its stains (next to no cells:
  an empty or dead well, or a compound that killed them, which is a phenotype: look before
  dropping; fields with a third of the usual cells are a compound's effect, not a defect);
- ``blank``: a stain is one value everywhere (already left out of the profiles).

A field gets the first of these that applies, in the order blank, empty, saturation, blur:
a field without cells has no structure to be sharp, and a saturated blob flattens the
focus measure, so the later flags would only echo the earlier ones. Focus and foreground
are compared on a log scale (ratios: a field with half the cells is as far from the plate
as one with twice as many).

Robust z-scores against the plate's own fields are the JUMP consortium's and CellProfiler
Analyst's practice for image QC; the thresholds are settings (``qc:``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.cache import BLANK, QC_PREFIX
from cellmorph.config import QCConfig

FLAGS, FLAGGED, DROPPED = "QC_Flags", "QC_Flagged", "QC_Dropped"
REASONS = ("blur", "saturation", "empty", "blank")
_FLOORS = {"Focus": 0.1, "Saturated": 0.001, "Foreground": 0.1}  # least spread (log: ratio)
_MIN_SATURATED = 0.005
_EMPTY_RATIO = 0.1  # an empty field's foreground, at most, against its plate's median


def robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """(x - median) / max(1.4826 MAD, floor).

    >>> robust_z(np.array([1.0, 1.1, 0.9, 1.0, 5.0]), 0.01).round(1).tolist()
    [0.0, 0.7, -0.7, 0.0, 27.0]
    """
    median = np.nanmedian(values)
    spread = max(1.4826 * float(np.nanmedian(np.abs(values - median))), floor)
    return (values - median) / spread


def flag_fields(quality: pd.DataFrame, channels: Sequence[str],
                cfg: QCConfig | None = None) -> pd.DataFrame:
    """The quality table with ``QC_Flags`` (the reason, empty when clean),
    ``QC_Flagged`` and ``QC_Dropped`` (flagged for a reason ``cfg.drop`` names)."""
    cfg = cfg or QCConfig()
    out = quality.reset_index(drop=True).copy()
    reasons: list[list[str]] = [[] for _ in range(len(out))]  # at most one each
    for _, idx in out.groupby(sc.PLATE, sort=False).indices.items():
        z = {m: np.stack([robust_z(_measure(out, stain, m)[idx], _FLOORS[m])
                          for stain in channels]) for m in _FLOORS}
        saturated = np.stack([_measure(out, stain, "Saturated")[idx] for stain in channels])
        blur = np.median(z["Focus"], axis=0) < -cfg.threshold
        bright = ((z["Saturated"] > cfg.threshold) & (saturated > _MIN_SATURATED)).any(axis=0)
        foreground = np.stack([_measure(out, stain, "Foreground")[idx] for stain in channels])
        scarce = np.median(foreground - np.median(foreground, axis=1, keepdims=True),
                           axis=0) < np.log(_EMPTY_RATIO)  # log scale: a ratio
        empty = (np.median(z["Foreground"], axis=0) < -cfg.threshold) & scarce
        for row, b, s, e in zip(idx, blur, bright, empty, strict=True):
            reasons[row] = next(([r] for r, hit in (("empty", e), ("saturation", s),
                                                    ("blur", b)) if hit), [])
    for row in np.flatnonzero(out[BLANK].to_numpy(bool)):
        reasons[row] = ["blank"]  # no measure of a constant stain means anything
    out[FLAGS] = [r[0] if r else "" for r in reasons]
    out[FLAGGED] = out[FLAGS] != ""
    out[DROPPED] = [bool(set(r) & set(cfg.drop)) for r in reasons]
    return out


def _measure(table: pd.DataFrame, stain: str, measure: str) -> np.ndarray:
    values = table[f"{QC_PREFIX}{stain}_{measure}"].to_numpy(np.float64)
    return np.log(values + 1e-6) if measure in ("Focus", "Foreground") else values


def drop_flagged(images: pd.DataFrame, qc: pd.DataFrame) -> pd.DataFrame:
    """The image profiles less the fields ``qc`` marks as dropped."""
    dropped = qc.loc[qc[DROPPED], sc.IMAGE_KEYS].astype(str)
    if dropped.empty:
        return images
    keys = pd.MultiIndex.from_frame(images[sc.IMAGE_KEYS].astype(str))
    return images[~keys.isin(pd.MultiIndex.from_frame(dropped))].reset_index(drop=True)


def qc_summary(qc: pd.DataFrame) -> dict:
    """Fields measured, flagged per reason, and dropped (for the run's record and text)."""
    counts = {r: int((qc[FLAGS] == r).sum()) for r in REASONS}
    return {"fields": int(len(qc)), "flagged": int(qc[FLAGGED].sum()),
            "by_reason": {r: n for r, n in counts.items() if n},
            "dropped": int(qc[DROPPED].sum())}
