"""A user's first small screen, on real pixels: the four BBBC014 fields cut into quadrants
(2 wells x 4 sites, DAPI + FITC, TNFa at 1e-7 and 1e-13 M) through the plate-map route.
`evaluate` gives what such a screen allows and names what it skipped; with control wells it
adds activity against them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.cli import main

DATA = Path(__file__).parent / "data" / "bbbc014"
FIELDS = {"A01": ("01-A-01", 1e-7), "A12": ("12-A-12", 1e-13)}  # well -> file key, TNFa (M)
CHANNELS = {"dapi": "Channel 2", "fitc": "Channel 1"}  # BBBC014: channel 2 is the DAPI one


def _quadrants(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return [image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:]]


def _plate_map(folder: Path, *, controls: bool) -> Path:
    """The plate map of the quadrant screen; with ``controls``, two DMSO wells whose sites
    are the lowest dose's quadrants mirrored, left-right in one and upside down in the other
    (new files: no image is shared by two wells)."""
    rows = []
    wells = [(w, "TNFa", dose, key, None) for w, (key, dose) in FIELDS.items()]
    if controls:
        wells += [("B01", "DMSO", 0.0, FIELDS["A12"][0], 1),
                  ("B02", "DMSO", 0.0, FIELDS["A12"][0], 0)]
    for well, compound, dose, key, mirror in wells:
        paths: dict[str, list[str]] = {}
        for stain, prefix in CHANNELS.items():
            field = tifffile.imread(DATA / f"{prefix}-{key}-00.tif")
            for site, quadrant in enumerate(_quadrants(field), start=1):
                name = f"img/{well}_s{site}_{stain}.tif"
                tifffile.imwrite(folder / name, quadrant if mirror is None
                                 else np.flip(quadrant, axis=mirror))
                paths.setdefault(stain, []).append(name)
        for site in range(4):
            rows.append({"plate": "P1", "well": well, "site": site + 1, "compound": compound,
                         "concentration": dose,
                         **{f"path_{s}": paths[s][site] for s in CHANNELS}})
    (folder / "plate_map.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    return folder / "plate_map.csv"


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> dict[str, Path]:
    """The screen without and with control wells, each indexed and profiled."""
    out = {}
    for name, controls in (("plain", False), ("controls", True)):
        folder = tmp_path_factory.mktemp(name)
        (folder / "img").mkdir()
        index = api.index_platemap(_plate_map(folder, controls=controls),
                                   output=folder / "index.parquet")
        assert len(index) == (16 if controls else 8)
        api.profile(index=folder / "index.parquet", output=folder / "run", progress=False,
                    precision="fp32", preprocess={"grid": [1, 1], "tile_size": 64})
        out[name] = folder
    return out


def test_a_dose_series_without_controls_gets_the_comparisons_it_allows(screens, capsys) -> None:
    """No control, no label: no MoA accuracy, no activity; the two doses compared."""
    run = screens["plain"] / "run"
    assert main(["evaluate", str(run), "-o", str(run / "ev")]) == 0
    captured = capsys.readouterr()
    assert "PerformanceWarning" not in captured.err
    for part in ("nsc", "nscb", "normalisation", "map_activity", "distance_to_controls"):
        assert f"skipped {part}: " in captured.out, part
    assert "dose series TNFa (distance to the lowest dose): 1e-13: 0.000, 1e-07: " in captured.out
    dose = pd.read_csv(run / "ev" / "dose_series.csv")
    assert len(dose) == 2 and dose["distance_to_lowest_dose"].iloc[1] > 0
    result = api.evaluate(run, map_null_size=100)
    assert result.nn == [] and set(result.skipped) >= {"nsc", "nscb", "normalisation"}
    assert "2 control wells on every plate" in result.skipped["normalisation"]


def test_the_same_screen_with_control_wells_gets_activity(screens) -> None:
    """Two DMSO wells: each treated well's distance to them, and activity mAP (one well a
    dose, so the compound's doses are each other's replicates)."""
    result = api.evaluate(screens["controls"] / "run", map_null_size=100)
    assert "normalisation" not in result.skipped
    assert result.map_activity is not None and list(result.map_activity[sc.COMPOUND]) == ["TNFa"]
    assert result.notes["map_activity_by"].startswith("compound")
    assert 0 <= result.map_activity["mean_average_precision"].iloc[0] <= 1
    distance = result.activity.set_index(sc.WELL)["distance_to_controls"]
    assert sorted(distance.index) == ["A01", "A12"]
    # The translocated well (highest TNFa) sits further from the controls, which are the
    # lowest dose mirrored, than the lowest dose itself.
    assert distance["A01"] > distance["A12"]
