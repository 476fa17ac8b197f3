"""Building and reading field-of-view indexes: validation, path checks, summaries.

An index is a table with one row per field of view (site) in the schema of
:mod:`cellmorph.schema`: ``Metadata_*`` annotations plus one ``Path_<stain>`` column per
channel holding the image file of that stain.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger
from cellmorph.schema import (
    BATCH,
    COMPOUND,
    CONCENTRATION,
    KEY_COLUMNS,
    METADATA_COLUMNS,
    MOA,
    PLATE,
    REPLICATE,
    ROLE,
    ROLE_UNLABELLED,
    ROLES,
    SITE,
    SYNTHETIC,
    TREATMENT,
    WELL,
    channels_of,
    controls,
    path_column,
    treatments,
)

log = get_logger(__name__)
_WELL_RE = re.compile(r"^([A-Pa-p]{1,2})0*(\d{1,2})$")


def normalise_well(well: str) -> str:
    """``a1``/``A1``/``A01`` -> ``A01`` (row letters upper case, column zero-padded)."""
    m = _WELL_RE.match(str(well).strip())
    if not m:
        raise ValueError(f"not a well name: {well!r} (expected a row letter and a column, e.g. B02)")
    return f"{m.group(1).upper()}{int(m.group(2)):02d}"


def treatment_id(compound: str, concentration: float) -> str:
    """A readable, unique treatment key: ``compound@concentration``."""
    return f"{compound}@{float(concentration):g}"


MISSING_FILES_HINT = ("check the path in that row, or --root, the folder relative paths "
                      "are read from")


def build_index(
    platemap: pd.DataFrame,
    channels: Sequence[str],
    *,
    root: Path | str | None = None,
    check_files: bool = True,
    source: str = "plate map",
    missing_hint: str = MISSING_FILES_HINT,
) -> pd.DataFrame:
    """Validate a plate map in the common schema and return the field-of-view index.

    ``platemap`` holds the ``Metadata_*`` columns (``Metadata_Role`` among them) and one
    ``Path_<channel>`` column per channel, relative to ``root`` or absolute. Paths are stored
    absolute (relative ones resolved against ``root``, else the current folder), so an index
    works from any folder; with ``check_files`` every missing file is reported at once.

    Errors name the offending row by the table's index label: a plate map read from a file
    carries its file line numbers there (``line N``), other tables their row numbers.
    """
    channels = list(channels)
    _check_columns(platemap, channels, source)
    df = platemap.copy()
    at = _locator(df)
    _typed_metadata(df, source, at)
    _check_consistent_labels(df, source, at)
    _check_fields(df, source, at)
    _resolve_paths(df, channels, root, source, at)
    if check_files:
        report_missing_files(df, channels, source, at, missing_hint)
    _warn_shared_files(df, channels, source, at)

    ordered = METADATA_COLUMNS + [path_column(c) for c in channels]
    extra = [c for c in df.columns if c not in ordered]
    out = df[ordered + extra].sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    return out


SYNTHETIC_MARKER = "SYNTHETIC.txt"  # written by `cellmorph synth` beside synthetic images


def _check_columns(platemap: pd.DataFrame, channels: list[str], source: str) -> None:
    """Every required column there, at least one channel and one row."""
    if not channels:
        raise CellmorphError(f"{source}: no channels given; name at least one stain")
    required = [PLATE, WELL, SITE, COMPOUND, CONCENTRATION, ROLE] + [path_column(c) for c in channels]
    missing = [c for c in required if c not in platemap.columns]
    if missing:
        raise CellmorphError(f"{source}: missing columns {missing}; add them or fix their names")
    if platemap.empty:
        raise CellmorphError(f"{source}: the selection is empty; check the filters and the input")


def _typed_metadata(df: pd.DataFrame, source: str, at: Callable[[object], str]) -> None:
    """Defaults for the optional columns, each column in its type (checked row by row), the
    treatment ids; in place."""
    for col, default in ((BATCH, None), (REPLICATE, 1), (MOA, None)):
        if col not in df.columns:
            df[col] = df[PLATE] if col == BATCH else default
    for col in (PLATE, BATCH, COMPOUND):
        df[col] = df[col].astype(str)
    df[WELL] = _checked_wells(df[WELL], source, at)
    df[SITE] = _checked_int(df[SITE], SITE, source, at)
    df[REPLICATE] = _checked_int(df[REPLICATE], REPLICATE, source, at)
    df[CONCENTRATION] = _checked_float(df[CONCENTRATION], CONCENTRATION, source, at)
    negative = df[CONCENTRATION] < 0
    if negative.any():
        label = df.index[negative][0]
        raise CellmorphError(f"{source}: {at(label)}: {CONCENTRATION} is "
                             f"{df[CONCENTRATION][label]:g}, negative; give doses as 0 or more")
    df[MOA] = df[MOA].astype(object).where(df[MOA].notna() & (df[MOA].astype(str) != ""), None)
    df[TREATMENT] = [treatment_id(c, x) for c, x in zip(df[COMPOUND], df[CONCENTRATION], strict=True)]
    bad_role = ~df[ROLE].isin(ROLES)
    if bad_role.any():
        raise CellmorphError(f"{source}: {at(df.index[bad_role][0])}: unknown role "
                             f"{df[ROLE][bad_role].iloc[0]!r}")


def _resolve_paths(df: pd.DataFrame, channels: list[str], root: Path | str | None, source: str,
                   at: Callable[[object], str]) -> None:
    """Every channel's path present and absolute (relative ones against ``root``); in place."""
    root_path = Path(os.path.abspath(root)) if root is not None else None
    for ch in channels:
        col = path_column(ch)
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            raise CellmorphError(f"{source}: {at(df.index[empty][0])}: channel {ch!r} has no "
                                 "image path; every field of view needs a file for every channel")
        df[col] = [_resolve(p, root_path) for p in df[col]]


def mark_synthetic(platemap: pd.DataFrame, *folders: Path | str | None) -> pd.DataFrame:
    """Flag every row ``Metadata_Synthetic`` when a folder holds the synthetic marker file."""
    if any(f is not None and (Path(f) / SYNTHETIC_MARKER).is_file() for f in folders):
        platemap = platemap.assign(**{SYNTHETIC: True})
    return platemap


def report_missing_files(index: pd.DataFrame, channels: Sequence[str], source: str,
                         at: Callable[[object], str] | None = None,
                         hint: str = MISSING_FILES_HINT) -> None:
    """Raise one error saying how many image files are missing, naming the row and column of
    the first (``at`` names a row by its label: its file line where it has one)."""
    at = at or _locator(index)
    found = {c: index[path_column(c)].map(lambda p: Path(p).is_file()) for c in channels}
    n_missing = sum(int((~ok).sum()) for ok in found.values())
    if n_missing:
        label, column = min((ok.index[~ok][0], c) for c, ok in found.items() if (~ok).any())
        raise CellmorphError(
            f"{source}: {at(label)}, column {path_column(column)}: image file "
            f"{index.at[label, path_column(column)]} not found ({n_missing} of "
            f"{len(index) * len(channels)} files missing); {hint}, or pass --no-check-files to "
            "index anyway")


LINE_NUMBERS = "cellmorph_line_numbers"  # DataFrame.attrs flag: the index holds file lines


def _locator(df: pd.DataFrame):
    """How to name a row in an error: its file line, or its row number."""
    word = "line" if df.attrs.get(LINE_NUMBERS) else "row"
    return lambda label: f"{word} {label}"


def _resolve(p: str, root: Path | None) -> str:
    path = Path(str(p).strip())
    if not path.is_absolute() and root is not None:
        path = root / path
    # abspath, not resolve(): symbolic links keep their own names.
    return os.path.abspath(path)


def _checked_wells(values: pd.Series, source: str, at) -> pd.Series:
    out = []
    for label, w in values.items():
        try:
            out.append(normalise_well(w))
        except ValueError as exc:
            raise CellmorphError(f"{source}: {at(label)}: {exc}") from None
    return pd.Series(out, index=values.index, dtype=object)


def _checked_int(values: pd.Series, name: str, source: str, at) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() | (num != np.round(num))
    if bad.any():
        label = values.index[bad][0]
        raise CellmorphError(f"{source}: {at(label)}: {name} is {values[label]!r}, not a whole "
                             "number")
    return num.astype(int)


def _checked_float(values: pd.Series, name: str, source: str, at) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce")
    bad = ~np.isfinite(num.astype(float))
    if bad.any():
        label = values.index[bad][0]
        raise CellmorphError(f"{source}: {at(label)}: {name} is {values[label]!r}, not a number")
    return num.astype(float)


def _check_fields(df: pd.DataFrame, source: str, at) -> None:
    """Each field of view appears once, and a well holds one treatment."""
    dup = df.duplicated(KEY_COLUMNS, keep=False)
    if dup.any():
        rows = df.index[dup]
        first = df.loc[rows[0]]
        twin = next(r for r in rows[1:] if (df.loc[r, KEY_COLUMNS] == first[KEY_COLUMNS]).all())
        raise CellmorphError(
            f"{source}: {at(rows[0])} and {at(twin)} are both plate {first[PLATE]}, well "
            f"{first[WELL]}, site {first[SITE]} ({int(dup.sum())} rows share a field in all); "
            "each field of view must appear once")
    per_well = df.groupby([PLATE, WELL])[TREATMENT].nunique()
    if (per_well > 1).any():
        plate, well = per_well.index[per_well > 1][0]
        rows = df.index[(df[PLATE] == plate) & (df[WELL] == well)]
        names = sorted(df.loc[rows, TREATMENT].unique())
        raise CellmorphError(
            f"{source}: plate {plate}, well {well} holds {len(names)} treatments "
            f"({', '.join(names[:3])}; {', '.join(at(r) for r in rows[:4])}); profiles are "
            "aggregated per well, so a well must hold one treatment: fix the plate or well")


def _warn_shared_files(df: pd.DataFrame, channels: Sequence[str], source: str, at) -> None:
    """Warn where one image file stands for two fields (a copy-and-paste slip in a map)."""
    for ch in channels:
        col = path_column(ch)
        shared = df[col].duplicated(keep=False)
        if shared.any():
            rows = df.index[shared]
            log.warning("%s: %d fields share image files in %s (first: %s at %s); each field "
                        "should have its own file", source, int(shared.sum()), col,
                        Path(df.loc[rows[0], col]).name, ", ".join(at(r) for r in rows[:2]))


def _check_consistent_labels(df: pd.DataFrame, source: str, at) -> None:
    """Every labelled row has a label, and a treatment carries one label only."""
    labelled = treatments(df)
    no_label = labelled[MOA].isna()
    if no_label.any():
        row = labelled.index[no_label][0]
        raise CellmorphError(f"{source}: {at(row)}: compound {labelled[COMPOUND][row]!r} "
                             "has no MoA label; add one or mark the row unlabelled")
    n_labels = labelled.groupby(TREATMENT)[MOA].nunique()
    if (n_labels > 1).any():
        treatment = n_labels.index[n_labels > 1][0]
        labels = sorted(map(str, labelled.loc[labelled[TREATMENT] == treatment, MOA].unique()))
        raise CellmorphError(f"{source}: treatment {treatment!r} has several labels {labels}; "
                             "give each treatment one label")


def warn_relabelled_compounds(index: pd.DataFrame, source: str) -> None:
    """Warn where a compound carries two MoA labels (at different concentrations) in a user's
    map: a slip more often than a dose-dependent mechanism (BBBC014's design has those)."""
    labelled = treatments(index)
    per_compound = labelled.groupby(COMPOUND)[MOA].nunique()
    for compound in per_compound.index[per_compound > 1]:
        labels = sorted(map(str, labelled.loc[labelled[COMPOUND] == compound, MOA].unique()))
        log.warning("%s: compound %r has %d MoA labels (%s) at different concentrations; "
                    "leave-one-compound-out keeps them in one fold", source, compound,
                    len(labels), ", ".join(labels))


def read_csv_table(path: Path | str, what: str = "file", *,
                   line_numbers: bool = False) -> pd.DataFrame:
    """Read a CSV with one clear error for a missing or unreadable file.

    With ``line_numbers`` the table's index holds each row's line in the file (the header is
    line 1), and errors from :func:`build_index` name rows by those lines.
    """
    path = Path(path)
    if not path.is_file():
        raise CellmorphError(f"{what} {path} not found; check the path")
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types for damaged CSVs
        raise CellmorphError(f"{path}: cannot be read as CSV ({exc})") from exc
    if df.empty and len(df.columns) == 0:
        raise CellmorphError(f"{path}: the file is empty; expected a header line and rows")
    if line_numbers:
        df.index = pd.RangeIndex(2, len(df) + 2)
        df.attrs[LINE_NUMBERS] = True
    return df


def read_index(index: Path | str | pd.DataFrame) -> pd.DataFrame:
    """An index written by ``cellmorph index`` (a Parquet path) or a DataFrame in the index
    schema, with its columns checked.

    Examples
    --------
    >>> index.to_parquet(tmp / "index.parquet")
    >>> len(read_index(tmp / "index.parquet")) == len(index)
    True
    """
    if isinstance(index, pd.DataFrame):
        return check_index(index, "index table")
    path = Path(index)
    if not path.is_file():
        raise CellmorphError(f"index file {path} not found; create it with `cellmorph index`")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise CellmorphError(f"{path}: not a readable Parquet index ({exc}); re-create it") from exc
    return check_index(df, str(path))


def check_index(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Raise unless ``df`` has the index columns (metadata and at least one ``Path_``)."""
    missing = [c for c in METADATA_COLUMNS if c not in df.columns]
    if missing or not channels_of(df):
        raise CellmorphError(f"{source}: not a cellmorph index (missing "
                             f"{missing or 'Path_ columns'}); re-create it with `cellmorph index`")
    return df


def summarize(index: pd.DataFrame) -> dict[str, int | list[str]]:
    """Counts of the labelled treatments (what is evaluated) and of the controls."""
    lab, ctl = treatments(index), controls(index)
    unl = index[index[ROLE] == ROLE_UNLABELLED]
    return {
        "images": int(len(lab)),
        "wells": int(lab[[PLATE, WELL]].drop_duplicates().shape[0]),
        "treatments": int(lab[TREATMENT].nunique()),
        "compounds": int(lab[COMPOUND].nunique()),
        "moas": int(lab[MOA].nunique()),
        "plates": int(lab[PLATE].nunique()),
        "batches": int(lab[BATCH].nunique()),
        "control_images": int(len(ctl)),
        "control_wells": int(ctl[[PLATE, WELL]].drop_duplicates().shape[0]),
        "unlabelled_images": int(len(unl)),
        "channels": channels_of(index),
    }


def match_channels(index: pd.DataFrame, channels: Sequence[str], source: str,
                   reference: str) -> pd.DataFrame:
    """``index`` with its ``Path_<stain>`` columns in the order of ``channels`` (stains are
    matched by name, so a screen whose columns come in another order is read alike); a stain
    missing or extra is one error naming it.

    Examples
    --------
    >>> screen = pd.DataFrame({"Path_Tubulin": ["t.tif"], "Path_DAPI": ["d.tif"]})
    >>> list(match_channels(screen, ["DAPI", "Tubulin"], "new", "run").columns)
    ['Path_DAPI', 'Path_Tubulin']
    """
    have = channels_of(index)
    missing = [c for c in channels if c not in have]
    extra = [c for c in have if c not in channels]
    if missing or extra:
        what = "; ".join(part for part in (
            f"lacks stain(s) {missing}" if missing else "",
            f"has stain(s) {extra} the run never saw" if extra else "") if part)
        raise CellmorphError(f"{source} {what}: the {reference} was made with stains "
                             f"{list(channels)}; index the screen with the same stain names "
                             "(Path_<stain> columns)")
    paths = [path_column(c) for c in channels]
    return index[[*(c for c in index.columns if c not in paths), *paths]]
