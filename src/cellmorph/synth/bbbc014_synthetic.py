"""Synthetic BBBC014: one 96-well plate, NF-kB translocation with TNF-alpha, 8-bit BMPs.

The official naming and channel order: ``Channel 1-NN-R-CC-00.Bmp`` is FITC (the reporter),
``Channel 2-...`` DAPI. Rows A-D are MCF7, rows E-H A549; column 1 has the highest
TNF-alpha concentration and column 12 the lowest (the layout of
:data:`cellmorph.datasets.bbbc014.DEFAULT_LAYOUT`); a plate map file gives the concentrations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cellmorph.atomic import atomic_path, ensure_writable_dir, write_text
from cellmorph.datasets.bbbc014 import (
    DEFAULT_LAYOUT,
    IMAGE_FOLDER,
    PLATEMAP_FILE,
    documented_concentrations,
)
from cellmorph.log import progress as progress_bar
from cellmorph.synth.bbbc021_synthetic import stable_seed
from cellmorph.synth.render import Phenotype, PlateEffect, check_size, render_field, to_uint

CELL_LINES = {
    "MCF7": Phenotype(cell_size=1.0, cell_elongation=1.2),
    "A549": Phenotype(cell_size=0.85, cell_elongation=1.6, nucleus_size=0.9),
}
NOTE = "SYNTHETIC DATA made by `cellmorph synth bbbc014`: not microscopy images.\n"


def synthesize_bbbc014(out: Path | str, *, size: tuple[int, int] = (256, 340), seed: int = 0,
                       progress: bool = True) -> Path:
    """Write ``out/BBBC014_v1_images`` with two BMPs (DAPI, FITC) per well; returns the folder.

    Examples
    --------
    >>> folder = synthesize_bbbc014(tmp / "bbbc014", size=(64, 80), progress=False)
    >>> folder.name, len(list(folder.iterdir()))
    ('BBBC014_v1_images', 192)
    """
    size = check_size(size)
    folder = ensure_writable_dir(Path(out) / IMAGE_FOLDER)
    plate = PlateEffect.random(("DAPI", "FITC"), np.random.default_rng(stable_seed(seed, "bbbc014")))
    wells = [(r, c) for r in "ABCDEFGH" for c in range(1, 13)]
    for i, (row, col) in enumerate(progress_bar(wells, desc="synthesising BBBC014", enabled=progress)):
        line = DEFAULT_LAYOUT.cell_line(row)
        # Dose-response: the nuclear fraction of the signal rises with concentration (column 1
        # highest), a sigmoid centred between the negative and positive columns.
        dose = (12 - col) / 11.0
        nuclear = 0.12 + 0.7 / (1.0 + np.exp(-(dose - 0.5) * 10))
        pheno = Phenotype(**{**CELL_LINES[line].__dict__, "nuclear_signal": nuclear})
        rng = np.random.default_rng(stable_seed(seed, row, col))
        planes = render_field(pheno, size, rng, channels=("DAPI", "FITC"), plate=plate)
        for ch_index, ch in ((1, "FITC"), (2, "DAPI")):
            name = f"Channel {ch_index}-{i + 1:02d}-{row}-{col:02d}-00.Bmp"
            with atomic_path(folder / name) as tmp:
                Image.fromarray(to_uint(planes[ch], np.uint8, 200.0)).save(tmp, format="BMP")
    write_text(NOTE + f"seed={seed} size={size[0]}x{size[1]}\n", Path(out) / "SYNTHETIC.txt")
    doses = [f"{c:.2e}".replace("e", "x10^").replace("+", "") for c in documented_concentrations()]
    write_text("TNF-alpha concentration (M), SYNTHETIC plate\n" + "\n".join(doses * 8) + "\n",
               Path(out) / PLATEMAP_FILE)
    return folder
