"""BBBC021 (Caie et al. 2010; Ljosa et al. 2013): the official metadata as a plate map.

The official ``BBBC021_v1_image.csv`` and ``BBBC021_v1_moa.csv`` ship with the package, so
indexing never needs a metadata download; a user's own copies can be passed instead.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pandas as pd

from cellmorph import schema as sc
from cellmorph.datasets.index import build_index, mark_synthetic, read_csv_table
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger

CHANNELS = ("DAPI", "Tubulin", "Actin")
CONTROL_COMPOUND = "DMSO"
IMAGE_COLUMNS = [
    "Image_FileName_DAPI", "Image_PathName_DAPI", "Image_FileName_Tubulin",
    "Image_PathName_Tubulin", "Image_FileName_Actin", "Image_PathName_Actin",
    "Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Replicate",
    "Image_Metadata_Compound", "Image_Metadata_Concentration",
]
MOA_COLUMNS = ["compound", "concentration", "moa"]

# The MoA benchmark (Ljosa et al. 2013) keeps taxol only where it was screened as a
# treatment (three concentrations in three Week1 plates); elsewhere taxol 0.3 uM is the
# plate's positive control (wells B11, C11, D11, E02, F02, G02) and is left out.
TAXOL = "taxol"
TAXOL_PLATES = ("Week1_22123", "Week1_22141", "Week1_22161")
TAXOL_WELLS = ("D03", "D04", "D05")

_SITE_RE = re.compile(r"_s(\d+)_")
IMAGE_CSV, MOA_CSV = "BBBC021_v1_image.csv", "BBBC021_v1_moa.csv"
log = get_logger(__name__)


def bundled_path(name: str) -> Path:
    """Path of a file shipped in ``cellmorph/data``."""
    return Path(str(resources.files("cellmorph") / "data" / name))


def read_image_metadata(path: Path | str | None = None) -> pd.DataFrame:
    """Read ``BBBC021_v1_image.csv`` (bundled copy by default) and check its columns."""
    path = Path(path) if path is not None else bundled_path("BBBC021_v1_image.csv.gz")
    df = read_csv_table(path, "metadata file")
    _require_columns(df, IMAGE_COLUMNS, path)
    return df


def read_moa_metadata(path: Path | str | None = None) -> pd.DataFrame:
    """Read ``BBBC021_v1_moa.csv`` (bundled copy by default); every row needs an MoA."""
    path = Path(path) if path is not None else bundled_path("BBBC021_v1_moa.csv")
    df = read_csv_table(path, "metadata file")
    _require_columns(df, MOA_COLUMNS, path)
    empty = df["moa"].isna() | (df["moa"].astype(str).str.strip() == "")
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise CellmorphError(f"{path}: line {row + 2} (compound {df['compound'].iloc[row]!r}) "
                             "has no MoA; fill in the moa column or remove the row")
    return df


def platemap(
    image_meta: pd.DataFrame,
    moa_meta: pd.DataFrame,
    *,
    moa_subset: bool = False,
    plates: list[str] | None = None,
) -> pd.DataFrame:
    """Turn the official BBBC021 tables into a plate map in the common schema.

    With ``moa_subset`` only the benchmark's labelled treatments (taxol rule applied) and
    the DMSO controls of their plates are kept; otherwise every field of view is kept and
    treatments without an MoA annotation are marked unlabelled.
    """
    img = image_meta
    compound = img["Image_Metadata_Compound"].astype(str)
    conc = pd.to_numeric(img["Image_Metadata_Concentration"], errors="coerce")
    plate = img["Image_Metadata_Plate_DAPI"].astype(str)
    well = img["Image_Metadata_Well_DAPI"].astype(str)
    moa, role = _benchmark_roles(moa_meta, compound, conc, plate, well)
    site = pd.to_numeric(img["Image_FileName_DAPI"].astype(str).str.extract(_SITE_RE, expand=False))
    out = pd.DataFrame({
        sc.PLATE: plate,
        sc.BATCH: plate.str.split("_").str[0],
        sc.WELL: well,
        sc.SITE: site,
        sc.REPLICATE: img["Replicate"],
        sc.COMPOUND: compound,
        sc.CONCENTRATION: conc,
        sc.MOA: moa,
        sc.ROLE: role,
        "Metadata_ImageNumber": img.get("ImageNumber"),
    })
    for ch in CHANNELS:
        out[sc.path_column(ch)] = (img[f"Image_PathName_{ch}"].astype(str) + "/"
                                   + img[f"Image_FileName_{ch}"].astype(str))
    if out[sc.SITE].isna().any():
        bad = img["Image_FileName_DAPI"][out[sc.SITE].isna()].iloc[0]
        raise CellmorphError(f"BBBC021 image metadata: file name {bad!r} has no _sN_ site part")

    return _select(out, moa_subset=moa_subset, plates=plates)


def _benchmark_roles(moa_meta: pd.DataFrame, compound: pd.Series, conc: pd.Series,
                     plate: pd.Series, well: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each field's MoA and role: the benchmark's labelled treatments (taxol rule), DMSO
    controls, the rest unlabelled."""
    moa_key = {
        (str(c), round(float(x), 6)): str(m)
        for c, x, m in zip(moa_meta["compound"], moa_meta["concentration"], moa_meta["moa"],
                           strict=True)
    }
    moa = pd.Series([moa_key.get((c, round(float(x), 6))) for c, x in zip(compound, conc,
                                                                             strict=True)],
                    index=compound.index, dtype=object)
    is_control = compound == CONTROL_COMPOUND
    is_taxol_treatment = plate.isin(TAXOL_PLATES) & well.isin(TAXOL_WELLS)
    benchmark = moa.notna() & ~is_control & ((compound != TAXOL) | is_taxol_treatment)
    role = pd.Series(sc.ROLE_UNLABELLED, index=compound.index, dtype=object)
    role[benchmark] = sc.ROLE_TREATMENT
    role[is_control] = sc.ROLE_CONTROL
    moa = moa.where(benchmark | is_control, None)
    moa[is_control] = CONTROL_COMPOUND
    return moa, role


def _select(out: pd.DataFrame, *, moa_subset: bool, plates: list[str] | None) -> pd.DataFrame:
    """The MoA benchmark's fields (and its plates' DMSO) and the plates asked for."""
    role = out[sc.ROLE]
    if moa_subset:
        treated_plates = set(out.loc[role == sc.ROLE_TREATMENT, sc.PLATE])
        keep = (role == sc.ROLE_TREATMENT) | ((role == sc.ROLE_CONTROL)
                                              & out[sc.PLATE].isin(treated_plates))
        out = out[keep]
    if plates:
        unknown = sorted(set(plates) - set(out[sc.PLATE]))
        if unknown:
            raise CellmorphError(f"BBBC021: unknown plate(s) {unknown}; plates look like Week1_22123")
        out = out[out[sc.PLATE].isin(plates)]
    return out.reset_index(drop=True)


def index_bbbc021(
    root: Path | str | None,
    *,
    moa_subset: bool = False,
    plates: list[str] | None = None,
    image_csv: Path | str | None = None,
    moa_csv: Path | str | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """The BBBC021 field-of-view index for images unpacked under ``root``.

    Parameters
    ----------
    root
        Folder holding the unpacked per-plate zips (``WeekN/WeekN_PLATE/``), or None to index
        the metadata alone (no image paths are checked).
    moa_subset
        Keep only the MoA benchmark: 103 labelled treatments (taxol rule applied) and the DMSO
        wells of their plates.
    plates
        Only these plates.
    image_csv, moa_csv
        The metadata tables; default ``ROOT/BBBC021_v1_image.csv`` (and ``_moa.csv``) when
        present, else the copies bundled with the package.
    check_files
        Check that every image exists; only the plate folders present under ``root`` are
        indexed (a partial download indexes what you have).

    Returns
    -------
    pandas.DataFrame
        One row per field of view in the index schema (:mod:`cellmorph.schema`).

    Examples
    --------
    >>> index = index_bbbc021(None, moa_subset=True, check_files=False)
    >>> len(index[index["Metadata_Role"] == "treatment"])
    1208
    """
    image_csv = image_csv or _local_copy(root, IMAGE_CSV)
    moa_csv = moa_csv or _local_copy(root, MOA_CSV)
    pm = platemap(read_image_metadata(image_csv), read_moa_metadata(moa_csv),
                  moa_subset=moa_subset, plates=plates)
    if root is not None:
        pm = _only_present_plates(pm, Path(root), explicit=bool(plates), only_present=check_files)
    pm = mark_synthetic(pm, root)
    return build_index(pm, CHANNELS, root=root, check_files=check_files and root is not None,
                       source="BBBC021", missing_hint="check ROOT: it holds the unpacked "
                       "per-plate zips (`cellmorph download bbbc021 ROOT` fetches them)")


def _local_copy(root: Path | str | None, name: str) -> Path | None:
    """ROOT's own copy of a metadata table (the download and `synth` put one there)."""
    if root is None:
        return None
    path = Path(root) / name
    return path if path.is_file() else None


def _only_present_plates(pm: pd.DataFrame, root: Path, explicit: bool,
                         only_present: bool = True) -> pd.DataFrame:
    """Index the plates whose folders exist under ``root`` (a partial download is normal).

    Within a present plate folder every file must exist; a plate named explicitly must exist.
    Without ``only_present`` (``--no-check-files``) every plate is kept, and the count is said.
    """
    folders = pm[sc.path_column(CHANNELS[0])].str.rsplit("/", n=1).str[0]
    present = {f for f in folders.unique() if (root / f).is_dir()}
    n_all = folders.nunique()
    if not only_present:
        if len(present) < n_all:
            log.warning("%d of %d plate folders are present under %s; indexing all %d without "
                        "checking files, as asked", len(present), n_all, root, n_all)
        return pm
    if explicit or not present:
        return pm  # the file check reports what is missing
    if len(present) < n_all:
        log.warning("%d of %d plate folders are present under %s; indexing those (download "
                    "the rest, or pass --plate to insist on some)", len(present), n_all, root)
    return pm[folders.isin(present)].reset_index(drop=True)


def _require_columns(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CellmorphError(f"{path}: missing columns {missing} (found {list(df.columns)[:8]}...); "
                             "use the official BBBC021 file or rename the columns")
