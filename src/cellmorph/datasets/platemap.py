"""A user's own screen: a plate-map CSV with one row per field of view.

Columns (case-insensitive): ``plate``, ``well``, ``site``, one ``path_<stain>`` column per
channel (any number of stains), ``compound``, ``concentration``; optional ``label`` (MoA),
``batch`` and ``replicate``. Rows whose compound is the control (``DMSO`` by default; matched
ignoring case and surrounding spaces, so `` dmso`` is DMSO too) are controls; treated rows
without a label are indexed as unlabelled. Errors name rows by their line in the file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellmorph import schema as sc
from cellmorph.datasets.index import (
    LINE_NUMBERS,
    build_index,
    read_csv_table,
    warn_relabelled_compounds,
)
from cellmorph.errors import CellmorphError

_RENAMES = {
    "plate": sc.PLATE, "well": sc.WELL, "site": sc.SITE, "compound": sc.COMPOUND,
    "concentration": sc.CONCENTRATION, "label": sc.MOA, "moa": sc.MOA, "batch": sc.BATCH,
    "replicate": sc.REPLICATE,
}
_REQUIRED = ("plate", "well", "site", "compound", "concentration")


def stain_columns(columns: list[str], source: str | Path, prefix: str = "path_") -> dict[str, str]:
    """``{column: stain}`` for the ``path_<stain>`` columns (case-insensitive prefix).

    A prefix without a stain name, or two columns for one stain (``path_dapi`` and
    ``Path_DAPI``), is an error.
    """
    found: dict[str, str] = {}
    seen: dict[str, str] = {}
    for col in columns:
        name = str(col).strip()
        if not name.lower().startswith(prefix):
            continue
        stain = name[len(prefix):].strip()
        if not stain:
            raise CellmorphError(f"{source}: column {col!r} names no stain; call it "
                                 f"{prefix}<stain>, e.g. {prefix}dapi")
        if stain.lower() in seen:
            raise CellmorphError(f"{source}: columns {seen[stain.lower()]!r} and {col!r} are "
                                 f"both the stain {stain!r}; keep one")
        seen[stain.lower()] = col
        found[col] = stain  # the user's spelling: Path_DAPI stays DAPI
    return found


def is_control_compound(compounds: pd.Series, control: str) -> pd.Series:
    """Rows whose compound is the control, ignoring case and surrounding white space."""
    return compounds.astype(str).str.strip().str.casefold() == control.strip().casefold()


def read_platemap(path: Path | str, *, control: str = "DMSO") -> tuple[pd.DataFrame, list[str]]:
    """Read a plate-map CSV into the common schema; returns it and the channel names."""
    path = Path(path)
    raw = read_csv_table(path, "plate map", line_numbers=True)
    stains = stain_columns(list(raw.columns), path)
    if not stains:
        raise CellmorphError(f"{path}: no path_<stain> columns; add one column per channel, "
                             "e.g. path_dapi, path_tubulin")
    lower = {c: str(c).strip().lower() for c in raw.columns}
    renames = {orig: sc.path_column(stains[orig]) if orig in stains else _RENAMES.get(low, orig)
               for orig, low in lower.items()}
    df = raw.rename(columns=renames)
    missing = [k for k in _REQUIRED if _RENAMES[k] not in df.columns]
    if missing:
        raise CellmorphError(f"{path}: missing columns {missing}; the plate map needs plate, well, "
                             "site, compound, concentration and path_<stain> columns")
    return assign_roles(df, control, path), list(stains.values())


def assign_roles(df: pd.DataFrame, control: str, source: str | Path) -> pd.DataFrame:
    """Set ``Metadata_Role``: the control compound (any case, spaces trimmed) -> control, a row
    with a label -> treatment, any other -> unlabelled. A compound labelled in some rows and
    not in others is an error naming the line."""
    df = df.copy()
    df[sc.COMPOUND] = df[sc.COMPOUND].astype(str).str.strip()
    is_control = is_control_compound(df[sc.COMPOUND], control)
    if sc.MOA in df.columns:  # object: an all-empty label column is read as floats
        df[sc.MOA] = df[sc.MOA].astype(object).where(
            df[sc.MOA].notna() & (df[sc.MOA].astype(str).str.strip() != ""), None)
    labelled = df[sc.MOA].notna() if sc.MOA in df.columns else pd.Series(False, index=df.index)
    df[sc.ROLE] = sc.ROLE_UNLABELLED
    df.loc[labelled, sc.ROLE] = sc.ROLE_TREATMENT
    df.loc[is_control, sc.ROLE] = sc.ROLE_CONTROL
    df.loc[is_control, sc.COMPOUND] = control
    if sc.MOA in df.columns:
        df.loc[is_control, sc.MOA] = control
        _check_partial_labels(df, source)
    return df


def _check_partial_labels(df: pd.DataFrame, source: str | Path) -> None:
    """A compound labelled in some rows but not in others is a plate-map mistake."""
    treated = df[df[sc.ROLE] != sc.ROLE_CONTROL]
    has_label = treated.groupby(sc.COMPOUND)[sc.MOA].transform(lambda s: s.notna().any())
    gap = has_label & treated[sc.MOA].isna()
    if gap.any():
        line = treated.index[gap][0]
        where = f"line {line}" if df.attrs.get(LINE_NUMBERS) else f"row {line}"
        raise CellmorphError(f"{source}: {where}: compound {treated[sc.COMPOUND][line]!r} has "
                             "no label here but has one in other rows; fill in the label")


def index_platemap(path: Path | str, *, root: Path | str | None = None, control: str = "DMSO",
                   check_files: bool = True) -> pd.DataFrame:
    """The field-of-view index of a plate map.

    Relative image paths resolve against ``root`` (default: the plate map's folder).

    Examples
    --------
    >>> index = index_platemap("plate_map.csv")  # doctest: +SKIP
    """
    df, channels = read_platemap(path, control=control)
    root = Path(root) if root is not None else Path(path).resolve().parent
    index = build_index(df, channels, root=root, check_files=check_files, source=str(path))
    warn_relabelled_compounds(index, str(path))
    return index
