"""Per-well profiles from CellProfiler/pycytominer, annotated through a screen's metadata."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellmorph import schema as sc
from cellmorph.datasets.index import normalise_well
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger
from cellmorph.schema import metadata_columns

LJOSA2013 = "ljosa2013"
log = get_logger(__name__)
_RENAMES = {"Image_Metadata_Plate": sc.PLATE, "Image_Metadata_Well": sc.WELL}


def read_profiles(source: Path | str, *, annotate_with: pd.DataFrame | None = None,
                  annotate: bool = True) -> pd.DataFrame:
    """Read a profile table (Parquet or CSV; ``ljosa2013`` = the bundled BBBC021 profiles).

    CellProfiler's ``Image_Metadata_Plate``/``Image_Metadata_Well`` become ``Metadata_``
    columns. A table without treatment annotations is annotated (unless ``annotate`` is
    off) by plate and well from ``annotate_with`` (an index), or from the BBBC021 metadata
    when its plates are BBBC021's.

    Examples
    --------
    >>> wells = read_profiles("ljosa2013")
    >>> wells.shape, sorted(wells["Metadata_Role"].unique())
    ((596, 525), ['control', 'treatment'])
    """
    if str(source) == LJOSA2013:
        from cellmorph.datasets.bbbc021 import bundled_path

        path = bundled_path("ljosa2013_per_well_mean.csv.gz")
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "profiles_well.parquet"
    if not path.is_file():
        raise CellmorphError(f"profile table {path} not found; pass a .parquet/.csv file, a "
                             f"`cellmorph profile` output folder, or {LJOSA2013}")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for damaged files
        raise CellmorphError(f"{path}: cannot be read as a table ({exc})") from exc
    df = df.rename(columns=_RENAMES)
    if sc.PLATE not in df.columns or sc.WELL not in df.columns:
        raise CellmorphError(f"{path}: no Metadata_Plate/Metadata_Well columns (or CellProfiler's "
                             "Image_Metadata_Plate/Well); profiles need plate and well "
                             "annotations")
    if annotate and sc.COMPOUND not in df.columns:
        df = annotate_wells(df, annotate_with if annotate_with is not None
                            else _bbbc021_wells(df, path), str(path))
    return df


def annotate_wells(profiles: pd.DataFrame, index: pd.DataFrame, source: str) -> pd.DataFrame:
    """Join well-level annotations of ``index`` onto ``profiles`` by plate and well."""
    meta_cols = [c for c in sc.METADATA_COLUMNS if c not in (sc.SITE,)]
    wells = index[meta_cols].drop_duplicates([sc.PLATE, sc.WELL])
    profiles = profiles.copy()
    profiles[sc.WELL] = [normalise_well(w) for w in profiles[sc.WELL]]
    out = profiles.merge(wells, on=[sc.PLATE, sc.WELL], how="inner")
    if out.empty:
        raise CellmorphError(f"{source}: no profile matches a plate/well of the annotations; "
                             "check the plate names")
    dropped = len(profiles) - len(out)
    if dropped:
        log.warning("%d wells of %s have no annotation and are left out", dropped, source)
    cols = metadata_columns(out)
    return out[cols + [c for c in out.columns if c not in cols]]


def _bbbc021_wells(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    from cellmorph.datasets.bbbc021 import index_bbbc021

    index = index_bbbc021(None, moa_subset=True, check_files=False)
    if not set(df[sc.PLATE]) & set(index[sc.PLATE]):
        raise CellmorphError(f"{path}: no Metadata_Compound column and its plates are not "
                             "BBBC021's; add Metadata_ annotations or pass --index")
    return index
