"""Where the cells are, as CellProfiler measured them: a per-object table (``Nuclei.csv``).

DeepProfiler takes single-cell locations this way, and the public per-cell datasets (JUMP,
the Cell Painting Gallery) ship them so. An object table names each nucleus by
``ImageNumber`` and ``ObjectNumber`` and gives its centre as ``Location_Center_X/Y``
(pixels; x is the column). ``ImageNumber`` refers to CellProfiler's image table
(``Image.csv``, with its own ``ImageNumber`` column) or, when the run was fed a LoadData
CSV, to that CSV's rows (CellProfiler numbers image sets 1, 2, ... in its order). Object
tables that already carry ``Metadata_Plate/Well/Site`` need no image table.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.datasets.index import normalise_well, read_csv_table
from cellmorph.errors import CellmorphError

OBJECT, CENTER_X, CENTER_Y = sc.OBJECT_NUMBER, sc.CP_CENTER_X, sc.CP_CENTER_Y
IMAGE_NUMBER = "ImageNumber"
LOCATION_COLUMNS = [*sc.IMAGE_KEYS, OBJECT, CENTER_X, CENTER_Y]
# CellProfiler spells the object number ObjectNumber in per-object exports and
# Number_Object_Number (with the object's name before it) in merged ones.
_OBJECT_NUMBER = re.compile(r"^(?:\w+_)?(?:ObjectNumber|Number_Object_Number)$")


def read_cell_locations(objects: Path | str, images: Path | str | None,
                        index: pd.DataFrame) -> pd.DataFrame:
    """The object table's nuclei, one row each: the field's plate, well and site (as the
    index spells them), ``Metadata_ObjectNumber`` and ``Location_Center_X/Y``.

    Every object must belong to a field of ``index``; an error names the first that does
    not, and the fix.
    """
    objects = Path(objects)
    table = read_csv_table(objects, "cell locations", line_numbers=True)
    if table.empty:
        raise CellmorphError(f"{objects}: no objects (a header and no rows); give the "
                             "per-object table of these images, or leave cells.locations "
                             "out to find nuclei in the nuclear stain")
    located = _centres(table, objects)
    keys = _image_keys(table, objects, images)
    located = pd.concat([keys, located], axis=1)
    return _matched_to_index(located, index, objects)


def _column(table: pd.DataFrame, name: str, path: Path) -> str:
    """``name`` or ``<Object>_name`` (merged exports prefix the object's name)."""
    found = [c for c in table.columns if c == name or str(c).endswith(f"_{name}")]
    if not found:
        raise CellmorphError(f"{path}: no {name} column (columns: {list(table.columns)[:10]}); "
                             "give CellProfiler's per-object table (Nuclei.csv)")
    return found[0]


def _centres(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    numbers = [c for c in table.columns if _OBJECT_NUMBER.match(str(c))]
    if not numbers:
        raise CellmorphError(f"{path}: no ObjectNumber column; give CellProfiler's per-object "
                             "table (Nuclei.csv)")
    out = pd.DataFrame({OBJECT: table[numbers[0]]}, index=table.index)
    for name in (CENTER_X, CENTER_Y):
        values = pd.to_numeric(table[_column(table, name, path)], errors="coerce")
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            line = table.index[bad][0]
            raise CellmorphError(f"{path}: line {line}: {name} is "
                                 f"{str(table.loc[line, _column(table, name, path)])!r}; "
                                 "centres are pixel coordinates (0 or more)")
        out[name] = values.astype(float)
    return out


def _image_keys(table: pd.DataFrame, path: Path, images: Path | str | None) -> pd.DataFrame:
    """Plate, well and site of each object's field: its own columns, or its ImageNumber
    looked up in the image table."""
    own = _strip_image_prefix(table)
    if all(k in own.columns for k in sc.IMAGE_KEYS):
        return _normalised(own[sc.IMAGE_KEYS], path)
    if images is None:
        raise CellmorphError(f"{path}: no Metadata_Plate/Well/Site columns; give the image "
                             "table its ImageNumber refers to (cells.location_images: "
                             "Image.csv or the LoadData CSV)")
    if IMAGE_NUMBER not in table.columns:
        raise CellmorphError(f"{path}: no ImageNumber column to find each object's image by")
    images = Path(images)
    image_table = _strip_image_prefix(read_csv_table(images, "cell location images"))
    missing = [k for k in sc.IMAGE_KEYS if k not in image_table.columns]
    if missing:
        raise CellmorphError(f"{images}: no {', '.join(missing)} column(s); the image table "
                             "needs Metadata_Plate, Metadata_Well and Metadata_Site")
    if IMAGE_NUMBER not in image_table.columns:  # a LoadData CSV: image sets in row order
        image_table[IMAGE_NUMBER] = np.arange(1, len(image_table) + 1)
    lookup = _normalised(image_table.set_index(IMAGE_NUMBER)[sc.IMAGE_KEYS], images)
    found = table[IMAGE_NUMBER].isin(lookup.index)
    if not found.all():
        line = table.index[~found][0]
        raise CellmorphError(f"{path}: line {line}: ImageNumber {table.loc[line, IMAGE_NUMBER]} "
                             f"is not in {images}; give the image table of the same "
                             "CellProfiler run")
    keys = lookup.loc[table[IMAGE_NUMBER]]
    keys.index = table.index
    return keys


def _strip_image_prefix(table: pd.DataFrame) -> pd.DataFrame:
    return table.rename(columns={c: c.removeprefix("Image_") for c in table.columns
                                 if str(c).startswith("Image_Metadata_")})


def _normalised(keys: pd.DataFrame, path: Path) -> pd.DataFrame:
    keys = keys.copy()
    try:
        keys[sc.WELL] = [normalise_well(w) for w in keys[sc.WELL]]
        keys[sc.SITE] = keys[sc.SITE].astype(int)
    except (ValueError, TypeError) as exc:
        raise CellmorphError(f"{path}: {exc}") from None
    keys[sc.PLATE] = keys[sc.PLATE].astype(str)
    return keys


def _matched_to_index(located: pd.DataFrame, index: pd.DataFrame, path: Path) -> pd.DataFrame:
    fields = index[sc.IMAGE_KEYS].astype({sc.PLATE: str, sc.SITE: int})
    known = pd.MultiIndex.from_frame(fields)
    present = pd.MultiIndex.from_frame(located[sc.IMAGE_KEYS]).isin(known)
    if not present.all():
        line = located.index[~present][0]
        plate, well, site = located.loc[line, sc.IMAGE_KEYS]
        raise CellmorphError(f"{path}: line {line}: object on plate {plate} well {well} site "
                             f"{site}, a field the index does not have; index those images "
                             "too, or leave their objects out")
    duplicated = located.duplicated([*sc.IMAGE_KEYS, OBJECT])
    if duplicated.any():
        line = located.index[duplicated][0]
        raise CellmorphError(f"{path}: line {line}: object {located.loc[line, OBJECT]} of its "
                             "field appears twice; give each nucleus one row")
    return located.sort_values([*sc.IMAGE_KEYS, OBJECT]).reset_index(drop=True)
