"""BBBC014 (NF-kB translocation, MCF7 and A549, TNF-alpha dose series) as a plate map.

No real file of the set could be checked when this was written, so the file-name pattern, the
channel names and the plate layout are settings (:class:`BBBC014Layout`), not constants:
override them if your copy is named or arranged differently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, Field

from cellmorph import schema as sc
from cellmorph.datasets.index import build_index
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger

IMAGE_FOLDER = "BBBC014_v1_images"
CHANNELS = ("DAPI", "FITC")
POSITIVE, NEGATIVE = "translocation", "no translocation"
log = get_logger(__name__)


class BBBC014Layout(BaseModel):
    """How BBBC014 files are named and how the plate is laid out."""

    pattern: str = Field(
        r"(?P<channel>[^-/]+)-(?P<index>\d+)-(?P<row>[A-Ha-h])-(?P<column>\d+)[^/]*\.bmp$",
        description="regex with groups channel, row, column; matched case-insensitively",
    )
    channels: dict[str, str] = Field(
        {"Channel1": "DAPI", "Channel2": "FITC", "Channel 1": "DAPI", "Channel 2": "FITC"},
        description="channel part of the file name -> stain",
    )
    cell_lines: dict[str, str] = Field({"A": "MCF7", "B": "MCF7", "C": "MCF7", "D": "MCF7",
                                        "E": "A549", "F": "A549", "G": "A549", "H": "A549"})
    positive_columns: list[int] = Field([1, 2, 3, 4], description="4 highest concentrations")
    negative_columns: list[int] = Field([9, 10, 11, 12], description="4 lowest (12 = none)")

    def cell_line(self, row: str) -> str:
        """The cell line seeded in a plate row."""
        return self.cell_lines[row.upper()]


DEFAULT_LAYOUT = BBBC014Layout()


def platemap(root: Path | str, layout: BBBC014Layout = DEFAULT_LAYOUT) -> pd.DataFrame:
    """Scan ``root`` (or ``root/BBBC014_v1_images``) and pair the two channels by well."""
    root = Path(root)
    folder = root / IMAGE_FOLDER if (root / IMAGE_FOLDER).is_dir() else root
    if not folder.is_dir():
        raise CellmorphError(f"BBBC014: folder {folder} not found; unpack BBBC014_v1_images.zip there")
    regex = re.compile(layout.pattern, re.IGNORECASE)
    found: dict[tuple[str, int], dict[str, str]] = {}
    unmatched = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".bmp", ".tif", ".tiff", ".png"):
            continue
        m = regex.search(path.name)
        stain = layout.channels.get(m.group("channel")) if m else None
        if stain is None:
            unmatched.append(path.name)
            continue
        key = (m.group("row").upper(), int(m.group("column")))
        if stain in found.setdefault(key, {}):
            raise CellmorphError(f"BBBC014: two {stain} images for well {key[0]}{key[1]:02d}: "
                                 f"{found[key][stain]} and {path.name}")
        found[key][stain] = path.name
    if not found:
        raise CellmorphError(f"BBBC014: no file in {folder} matches the pattern {layout.pattern!r}; "
                             "pass --pattern for your file names")
    incomplete = sorted(f"{r}{c:02d}" for (r, c), chans in found.items()
                        if set(chans) != set(CHANNELS))
    if incomplete:
        raise CellmorphError(f"BBBC014: {len(incomplete)} wells lack a channel (first: "
                             f"{incomplete[:5]}); every well needs a DAPI and a FITC image")
    rows = []
    for (row, col), chans in sorted(found.items()):
        line = layout.cell_line(row)
        label = (POSITIVE if col in layout.positive_columns
                 else NEGATIVE if col in layout.negative_columns else None)
        rows.append({
            sc.PLATE: "BBBC014", sc.BATCH: line, sc.WELL: f"{row}{col:02d}", sc.SITE: 1,
            sc.REPLICATE: 1, sc.COMPOUND: f"TNFalpha/{line}",
            # Dose level: 12 = highest concentration (column 1), 1 = none (column 12).
            sc.CONCENTRATION: float(13 - col), sc.MOA: label,
            sc.ROLE: sc.ROLE_TREATMENT if label else sc.ROLE_UNLABELLED,
            "Metadata_CellLine": line,
            **{sc.path_column(s): str(folder / f) for s, f in chans.items()},
        })
    if unmatched:
        # Reported, not fatal: the folder may hold notes or thumbnails.
        log.warning("BBBC014: %d files did not match the pattern (first: %s)", len(unmatched),
                    unmatched[:3])
    return pd.DataFrame(rows)


def index_bbbc014(root: Path | str, layout: BBBC014Layout = DEFAULT_LAYOUT,
                  check_files: bool = True) -> pd.DataFrame:
    """The BBBC014 field-of-view index (one field a well; labels per the layout)."""
    # The compound name carries the cell line ("TNFalpha/MCF7"), so that a treatment (dose
    # level on one cell line) aggregates the replicate wells of one cell line only.
    pm = platemap(root, layout)
    return build_index(pm, CHANNELS, root=None, check_files=check_files, source="BBBC014")
