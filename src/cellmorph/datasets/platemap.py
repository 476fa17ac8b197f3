"""A user's own screen: a plate-map CSV with one row per field of view.

Columns (case-insensitive): ``plate``, ``well``, ``site``, one ``path_<stain>`` column per
channel (any number of stains), ``compound``, ``concentration``; optional ``label`` (MoA),
``batch`` and ``replicate``. Rows whose compound is the control (``DMSO`` by default) are
controls; treated rows without a label are indexed as unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellmorph import schema as sc
from cellmorph.datasets.index import build_index, read_csv_table
from cellmorph.errors import CellmorphError

_RENAMES = {
    "plate": sc.PLATE, "well": sc.WELL, "site": sc.SITE, "compound": sc.COMPOUND,
    "concentration": sc.CONCENTRATION, "label": sc.MOA, "moa": sc.MOA, "batch": sc.BATCH,
    "replicate": sc.REPLICATE,
}


def read_platemap(path: Path | str, *, control: str = "DMSO") -> tuple[pd.DataFrame, list[str]]:
    """Read a plate-map CSV into the common schema; returns it and the channel names."""
    path = Path(path)
    raw = read_csv_table(path, "plate map")
    lower = {c: c.strip().lower() for c in raw.columns}
    channels = [c[len("path_"):] for c in lower.values() if c.startswith("path_")]
    if not channels:
        raise CellmorphError(f"{path}: no path_<stain> columns; add one column per channel, "
                             "e.g. path_dapi, path_tubulin")
    renames = {orig: _RENAMES.get(low, sc.path_column(low[5:]) if low.startswith("path_") else orig)
               for orig, low in lower.items()}
    df = raw.rename(columns=renames)
    missing = [k for k, v in _RENAMES.items() if v in (sc.PLATE, sc.WELL, sc.SITE, sc.COMPOUND,
                                                       sc.CONCENTRATION) and v not in df.columns]
    if missing:
        raise CellmorphError(f"{path}: missing columns {missing}; the plate map needs plate, well, "
                             "site, compound, concentration and path_<stain> columns")
    is_control = df[sc.COMPOUND].astype(str) == control
    labelled = df[sc.MOA].notna() if sc.MOA in df.columns else pd.Series(False, index=df.index)
    df[sc.ROLE] = sc.ROLE_UNLABELLED
    df.loc[labelled, sc.ROLE] = sc.ROLE_TREATMENT
    df.loc[is_control, sc.ROLE] = sc.ROLE_CONTROL
    if sc.MOA in df.columns:
        df.loc[is_control, sc.MOA] = control
        _check_partial_labels(df, path)
    return df, channels


def _check_partial_labels(df: pd.DataFrame, path: Path) -> None:
    """A compound labelled in some rows but not in others is a plate-map mistake."""
    treated = df[df[sc.ROLE] != sc.ROLE_CONTROL]
    has_label = treated.groupby(sc.COMPOUND)[sc.MOA].transform(lambda s: s.notna().any())
    gap = has_label & treated[sc.MOA].isna()
    if gap.any():
        row = int(treated.index[gap][0])
        raise CellmorphError(f"{path}: row {row + 2}: compound {treated[sc.COMPOUND][row]!r} has no "
                             "label here but has one in other rows; fill in the label")


def index_platemap(path: Path | str, *, root: Path | str | None = None, control: str = "DMSO",
                   check_files: bool = True) -> pd.DataFrame:
    """The field-of-view index of a plate map; relative paths resolve against ``root``
    (default: the plate map's folder)."""
    df, channels = read_platemap(path, control=control)
    root = Path(root) if root is not None else Path(path).resolve().parent
    return build_index(df, channels, root=root, check_files=check_files, source=str(path))
