"""BBBC014 (NF-kB translocation, MCF7 and A549, TNF-alpha dose series) as a plate map.

The official files are ``BBBC014_v1_images/Channel {1|2}-{NN}-{Row}-{CC}-00.Bmp`` (the
sample fields in the test data are the same images as ``.tif``): **Channel 1 is FITC** (the
NF-kB reporter, cytoplasmic at low TNF-alpha and nuclear at high) and **Channel 2 is DAPI**
(nuclei only). NN runs 01-96 row-major. Rows A-D are MCF7, rows E-H A549; columns 1 -> 12
are 12 TNF-alpha concentrations from 1e-7 M down to 1e-13 M, given exactly by the official
``BBBC014_v1_platemap_all.txt``. Kensert et al. label columns 1-4 positive (translocation)
and 9-12 negative, per cell line. Everything here is a setting (:class:`BBBC014Layout`) for
copies named or arranged differently.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from cellmorph import schema as sc
from cellmorph.datasets.index import build_index, mark_synthetic
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger

IMAGE_FOLDER = "BBBC014_v1_images"
PLATEMAP_FILE = "BBBC014_v1_platemap_all.txt"
CHANNELS = ("DAPI", "FITC")
POSITIVE, NEGATIVE = "translocation", "no translocation"
ROWS = "ABCDEFGH"
log = get_logger(__name__)


class BBBC014Layout(BaseModel):
    """How BBBC014 files are named and how the plate is laid out."""

    pattern: str = Field(
        r"^Channel ?(?P<channel>\d)-(?P<index>\d+)-(?P<row>[A-Ha-h])-(?P<column>\d+)"
        r"(?:-\d+)?\.(?:bmp|tiff?|png)$",
        description="regex with groups channel, row, column; matched case-insensitively "
        "(default: the official `Channel 1-01-A-01-00.Bmp`, also as .tif)",
    )
    channels: dict[str, str] = Field({"1": "FITC", "2": "DAPI"},
                                     description="channel part of the file name -> stain")
    cell_lines: dict[str, str] = Field({"A": "MCF7", "B": "MCF7", "C": "MCF7", "D": "MCF7",
                                        "E": "A549", "F": "A549", "G": "A549", "H": "A549"})
    positive_columns: list[int] = Field([1, 2, 3, 4], description="4 highest concentrations")
    negative_columns: list[int] = Field([9, 10, 11, 12], description="4 lowest concentrations")

    def cell_line(self, row: str) -> str:
        """The cell line seeded in a plate row."""
        return self.cell_lines[row.upper()]


DEFAULT_LAYOUT = BBBC014Layout()


def documented_concentrations() -> np.ndarray:
    """Molar TNF-alpha per column when the plate map file is absent: 1e-7 M in column 1 down
    to 1e-13 M in column 12, evenly spaced in log concentration."""
    return 10.0 ** np.linspace(-7, -13, 12)


_POWER = re.compile(r"(?:(\d+(?:\.\d+)?)\s*[x×*·]\s*)?10\s*\^\s*\(?\s*([-−–+]?\s*\d+(?:\.\d+)?)")
_PLAIN = re.compile(r"^[-+]?\d+(?:\.\d+)?[eE][-+]?\d+$")


def read_concentrations(path: Path | str) -> np.ndarray:
    """The 96 molar TNF-alpha concentrations (row-major, A01 ... H12) of
    ``BBBC014_v1_platemap_all.txt``: one token a well such as ``10^-7`` or ``1x10^-7``
    (latin-1 text, a header line allowed)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise CellmorphError(f"{path}: cannot be read ({exc.strerror})") from None
    values = []
    for line in text.splitlines():
        tokens = _POWER.findall(line)
        if tokens:
            for mantissa, exponent in tokens:
                exp = float(re.sub(r"\s", "", exponent).replace("−", "-").replace("–", "-"))
                values.append((float(mantissa) if mantissa else 1.0) * 10.0 ** exp)
        elif _PLAIN.match(line.strip()):
            values.append(float(line.strip()))
    if len(values) != 96:
        raise CellmorphError(f"{path}: found {len(values)} concentrations, expected 96 (one per "
                             "well, A01 ... H12, written like 10^-7)")
    return np.asarray(values, dtype=float)


def image_folder(root: Path | str) -> Path:
    """``ROOT/BBBC014_v1_images`` when it exists, else ROOT itself."""
    root = Path(root)
    folder = root / IMAGE_FOLDER if (root / IMAGE_FOLDER).is_dir() else root
    if not folder.is_dir():
        raise CellmorphError(f"BBBC014: folder {folder} not found; unpack {IMAGE_FOLDER}.zip "
                             "there (`cellmorph download bbbc014 ROOT`)")
    return folder


def concentrations(root: Path | str, folder: Path) -> tuple[np.ndarray, str]:
    """Per-well molar concentrations and where they came from."""
    for place in (Path(root), folder.parent, folder):
        path = place / PLATEMAP_FILE
        if path.is_file():
            return read_concentrations(path), str(path)
    log.warning("BBBC014: %s not found beside the images; using the documented series "
                "(1e-7 M in column 1 down to 1e-13 M in column 12)", PLATEMAP_FILE)
    return np.tile(documented_concentrations(), 8), "documented series"


def platemap(root: Path | str, layout: BBBC014Layout = DEFAULT_LAYOUT) -> pd.DataFrame:
    """Scan ``root`` (or ``root/BBBC014_v1_images``) and pair the two channels by well."""
    folder = image_folder(root)
    try:
        regex = re.compile(layout.pattern, re.IGNORECASE)
    except re.error as exc:
        raise CellmorphError(f"BBBC014: invalid pattern {layout.pattern!r} ({exc}); give a "
                             "regular expression with groups channel, row and column") from None
    missing = {"channel", "row", "column"} - set(regex.groupindex)
    if missing:
        raise CellmorphError(f"BBBC014: invalid pattern {layout.pattern!r}: it lacks the "
                             f"group(s) {sorted(missing)}; write them as (?P<row>...)")
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
    molar, source = concentrations(root, folder)
    rows = []
    for (row, col), chans in sorted(found.items()):
        line = layout.cell_line(row)
        label = (POSITIVE if col in layout.positive_columns
                 else NEGATIVE if col in layout.negative_columns else None)
        rows.append({
            sc.PLATE: "BBBC014", sc.BATCH: line, sc.WELL: f"{row}{col:02d}", sc.SITE: 1,
            sc.REPLICATE: 1, sc.COMPOUND: f"TNFalpha/{line}",
            sc.CONCENTRATION: float(molar[ROWS.index(row) * 12 + col - 1]), sc.MOA: label,
            sc.ROLE: sc.ROLE_TREATMENT if label else sc.ROLE_UNLABELLED,
            sc.CELL_LINE: line, "Metadata_ConcentrationSource": source,
            **{sc.path_column(s): str(folder / f) for s, f in chans.items()},
        })
    if unmatched:
        # Reported, not fatal: the folder may hold notes or thumbnails.
        log.warning("BBBC014: %d files did not match the pattern (first: %s)", len(unmatched),
                    unmatched[:3])
    return pd.DataFrame(rows)


def index_bbbc014(root: Path | str, layout: BBBC014Layout = DEFAULT_LAYOUT,
                  check_files: bool = True) -> pd.DataFrame:
    """The BBBC014 field-of-view index (one field a well; labels per the layout).

    Examples
    --------
    >>> index = index_bbbc014("data/bbbc014")  # doctest: +SKIP
    >>> index[["Metadata_Well", "Metadata_Concentration", "Path_DAPI"]].head()  # doctest: +SKIP
    """
    # The compound name carries the cell line ("TNFalpha/MCF7"), so that a treatment (dose
    # on one cell line) aggregates the replicate wells of one cell line only.
    pm = mark_synthetic(platemap(root, layout), root, image_folder(root).parent)
    return build_index(pm, CHANNELS, root=None, check_files=check_files, source="BBBC014")
