"""The field's own image lists: CellProfiler LoadData CSVs (also DeepProfiler's and the JUMP
Cell Painting ``load_data_csv`` files).

A LoadData CSV has ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``, then
``FileName_<Channel>`` and ``PathName_<Channel>`` per channel (an ``Image_`` prefix, as in
CellProfiler's own exports, is accepted), and often ``Metadata_`` treatment columns. A
separate treatment table (a platemap or compound metadata file) can be joined on plate and
well, or on well alone when it describes one layout for every plate. Controls, labels and
batches follow the rules of a plate map (:mod:`cellmorph.datasets.platemap`).

Illumination-function channels (``FileName_Illum*``, as in JUMP files) are not images of
cells and are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cellmorph import schema as sc
from cellmorph.datasets.index import build_index, read_csv_table, warn_relabelled_compounds
from cellmorph.datasets.platemap import assign_roles
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger

log = get_logger(__name__)
_FILE = re.compile(r"^(?:Image_)?FileName_(?P<channel>.+)$")
# Common spellings of the treatment columns (CellProfiler, JUMP, pycytominer, Broad).
ALIASES = {
    sc.COMPOUND: ("Metadata_Compound", "Metadata_compound", "Metadata_broad_sample",
                  "Metadata_pert_iname", "Metadata_JCP2022", "Metadata_Treatment"),
    sc.CONCENTRATION: ("Metadata_Concentration", "Metadata_concentration",
                       "Metadata_mmoles_per_liter", "Metadata_Dose", "Metadata_dose"),
    sc.MOA: ("Metadata_MoA", "Metadata_moa", "Metadata_MOA", "Metadata_Label",
             "Metadata_label"),
    sc.BATCH: ("Metadata_Batch", "Metadata_batch"),
}


def _pick(df: pd.DataFrame, target: str, given: str | None, source: str) -> str | None:
    if given:
        if given not in df.columns:
            raise CellmorphError(f"{source}: no column {given!r} (columns: "
                                 f"{list(df.columns)[:12]}...)")
        return given
    return next((c for c in ALIASES[target] if c in df.columns), None)


def read_loaddata(path: Path | str, *, treatments: Path | str | None = None,
                  compound: str | None = None, concentration: str | None = None,
                  label: str | None = None, batch: str | None = None,
                  control: str = "DMSO") -> tuple[pd.DataFrame, list[str]]:
    """A LoadData CSV (and optional treatment table) as a plate map and its channels."""
    path = Path(path)
    df = read_csv_table(path, "LoadData file", line_numbers=True)
    df = df.rename(columns={c: c.removeprefix("Image_") for c in df.columns
                            if str(c).startswith("Image_Metadata_")})
    channels = []
    for col in df.columns:
        m = _FILE.match(str(col))
        if not m:
            continue
        channel = m.group("channel")
        if channel.lower().startswith("illum"):
            continue
        prefix = "Image_" if str(col).startswith("Image_") else ""
        path_col = f"{prefix}PathName_{channel}"
        if path_col not in df.columns:
            raise CellmorphError(f"{path}: {col} has no {path_col} column; LoadData needs both")
        for name in (col, path_col):
            empty = df[name].isna() | (df[name].astype(str).str.strip() == "")
            if empty.any():
                raise CellmorphError(f"{path}: line {df.index[empty][0]}: {name} is empty; every "
                                     "field of view needs a file for every channel")
        df[sc.path_column(channel)] = [str(Path(str(d)) / str(f)) for d, f in
                                       zip(df[path_col], df[col], strict=True)]
        channels.append(channel)
    if not channels:
        raise CellmorphError(f"{path}: no FileName_<Channel> columns; is it a CellProfiler "
                             "LoadData CSV?")
    for key in (sc.PLATE, sc.WELL):
        if key not in df.columns:
            raise CellmorphError(f"{path}: missing {key}; LoadData files need Metadata_Plate "
                                 "and Metadata_Well")
    if sc.SITE not in df.columns:
        df[sc.SITE] = df.groupby([sc.PLATE, sc.WELL]).cumcount() + 1
    if treatments is not None:
        df = _join_treatments(df, Path(treatments), path)
    source = str(path) + (f" + {treatments}" if treatments else "")
    columns = {target: _pick(df, target, given, source) for target, given in
               ((sc.COMPOUND, compound), (sc.CONCENTRATION, concentration), (sc.MOA, label),
                (sc.BATCH, batch))}
    if columns[sc.COMPOUND] is None:
        raise CellmorphError(f"{source}: no treatment column (looked for "
                             f"{list(ALIASES[sc.COMPOUND])}); give --compound-column or a "
                             "treatment table with --treatments")
    for target, col in columns.items():
        if col is not None and col != target:
            df[target] = df[col]
    if columns[sc.CONCENTRATION] is None:
        log.warning("%s: no concentration column; every treatment gets concentration 0", source)
        df[sc.CONCENTRATION] = 0.0
    df = assign_roles(df, control, source)
    # Controls often have no concentration in these files: they are dose 0. (Object dtype: a
    # text column keeps its values for build_index to name the line of one that is no number.)
    df[sc.CONCENTRATION] = df[sc.CONCENTRATION].astype(object)
    df.loc[sc.is_control(df) & df[sc.CONCENTRATION].isna(), sc.CONCENTRATION] = 0.0
    return df, channels


# Join keys as platemaps spell them (pycytominer / JUMP: well_position, plate_map_name ...).
_KEYS = {sc.WELL: ("Metadata_Well", "Metadata_well", "Metadata_well_position",
                   "Metadata_WellPosition"),
         sc.PLATE: ("Metadata_Plate", "Metadata_plate", "Metadata_Assay_Plate_Barcode")}


def _join_treatments(df: pd.DataFrame, treatments: Path, path: Path) -> pd.DataFrame:
    table = read_csv_table(treatments, "treatment table")
    table = table.rename(columns={c: f"Metadata_{c}" for c in table.columns
                                  if not str(c).startswith("Metadata_")})
    for key, spellings in _KEYS.items():
        found = next((c for c in spellings if c in table.columns), None)
        if found and found != key:
            table = table.rename(columns={found: key})
    if sc.WELL not in table.columns:
        raise CellmorphError(f"{treatments}: no well column to join on (Metadata_Well or well)")
    from cellmorph.datasets.index import normalise_well

    for frame, name in ((df, path), (table, treatments)):
        try:
            frame[sc.WELL] = [normalise_well(w) for w in frame[sc.WELL]]
        except ValueError as exc:
            raise CellmorphError(f"{name}: {exc}") from None
    keys = [sc.PLATE, sc.WELL] if sc.PLATE in table.columns else [sc.WELL]
    for key in keys:
        table[key] = table[key].astype(str)
        df[key] = df[key].astype(str)
    duplicated = table.duplicated(keys)
    if duplicated.any():
        raise CellmorphError(f"{treatments}: {int(duplicated.sum())} rows repeat a "
                             f"{'/'.join(k.removeprefix('Metadata_') for k in keys)}; give each "
                             "well one treatment")
    overlap = [c for c in table.columns if c in df.columns and c not in keys]
    joined = df.drop(columns=overlap).merge(table, on=keys, how="left", validate="many_to_one")
    joined.index = df.index
    joined.attrs = df.attrs
    unmatched = joined[table.columns.difference(keys)].isna().all(axis=1)
    if unmatched.any():
        first = joined.loc[unmatched, [sc.PLATE, sc.WELL]].iloc[0].tolist()
        raise CellmorphError(f"{path}: {int(unmatched.sum())} images have no treatment in "
                             f"{treatments} (first: {first}); complete the treatment table")
    return joined


def index_loaddata(path: Path | str, *, treatments: Path | str | None = None,
                   root: Path | str | None = None, control: str = "DMSO",
                   check_files: bool = True, **columns: str | None) -> pd.DataFrame:
    """The field-of-view index of a LoadData CSV.

    Relative ``PathName_`` folders resolve against ``root`` (default: the CSV's folder).
    ``columns`` names treatment columns the aliases do not find: ``compound=``,
    ``concentration=``, ``label=``, ``batch=``.

    Examples
    --------
    >>> index = index_loaddata("load_data.csv", treatments="platemap.csv")  # doctest: +SKIP
    """
    df, channels = read_loaddata(path, treatments=treatments, control=control, **columns)
    root = Path(root) if root is not None else Path(path).resolve().parent
    index = build_index(df, channels, root=root, check_files=check_files, source=str(path))
    warn_relabelled_compounds(index, str(path))
    return index
