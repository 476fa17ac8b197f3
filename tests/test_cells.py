"""Single cells: nuclei found (real BBBC014 pixels, SYNTHETIC fields with known centres),
CellProfiler locations, cell crops in the tile cache, per-cell profiles, their export, and
fine-tuning and Grad-CAM on cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.optimize import linear_sum_assignment

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.cache import build_tile_cache
from cellmorph.cli import main
from cellmorph.config import PreprocessConfig
from cellmorph.datasets.cell_locations import read_cell_locations
from cellmorph.datasets.index import read_index
from cellmorph.errors import CellmorphError
from cellmorph.imageio import read_image
from cellmorph.preprocess.cells import cell_crops, choose_cells
from cellmorph.preprocess.nuclei import find_nuclei, label_nuclei
from cellmorph.profiling.translocation import CELLS, NUCLEI_FOUND, translocation_fields
from cellmorph.synth.render import Phenotype, render_field_with_cells

CENTRE = [sc.CP_CENTER_Y, sc.CP_CENTER_X]


def _pixel(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rounded = np.floor(centres + 0.5).astype(int)
    return rounded[:, 0], rounded[:, 1]


def test_real_bbbc014_every_readout_nucleus_holds_a_detected_centre(real014_index) -> None:
    fields = translocation_fields(real014_index, progress_bar=False)
    for _, row in real014_index.iterrows():
        dapi = read_image(row["Path_DAPI"])
        objects = label_nuclei(dapi)  # the translocation readout's nuclei (not split)
        found = find_nuclei(dapi)
        hit = objects[_pixel(found[CENTRE].to_numpy())]
        assert (hit > 0).all(), "a centre off every nucleus"
        pieces = np.bincount(hit, minlength=objects.max() + 1)[np.unique(objects[objects > 0])]
        assert (pieces >= 1).all(), "a nucleus of the readout without a detected centre"
        # The counts differ only by the nuclei that were split: each object's extra pieces.
        assert len(found) == len(pieces) + int((pieces - 1).sum())
        readout = fields.set_index(sc.WELL).loc[row[sc.WELL]]
        assert readout[NUCLEI_FOUND] == len(found)
        # The readout counts the objects with a cytoplasm ring (all but a few).
        assert len(pieces) - 10 <= readout[CELLS] <= len(pieces)
        print(f"{row[sc.WELL]}: readout {readout[CELLS]} cells, {len(pieces)} objects, "
              f"{len(found)} nuclei after splitting {int((pieces > 1).sum())} clumps")


def test_real_bbbc014_cell_crops_are_centred_on_detected_nuclei(real014_index, tmp_path) -> None:
    cfg = PreprocessConfig(tiles="cells", illumination=False, rescale="image", drop_empty=False,
                           cells={"size": 48, "max_per_field": None})
    cache = build_tile_cache(real014_index, cfg, tmp_path, tile_size=48, progress=False)
    (plate,) = cache.plates
    table, tiles = cache.table(plate), cache.tiles(plate)
    dapi_channel = list(cache.channels).index("DAPI")
    for row_number, field in table.groupby("Metadata_IndexRow"):
        dapi = read_image(real014_index.loc[row_number, "Path_DAPI"])
        found = find_nuclei(dapi).set_index(sc.OBJECT_NUMBER)
        centres = field[[sc.CELL_Y, sc.CELL_X]].to_numpy()
        # Every crop is a detected nucleus's, at its centre ...
        expected = found.loc[field[sc.OBJECT_NUMBER], CENTRE].to_numpy()
        np.testing.assert_array_equal(centres, expected)
        assert (field[sc.CELL_COUNT] == len(found)).all()
        # ... and the crop's middle pixel lies on that nucleus in the nuclear stain.
        labels = label_nuclei(dapi)
        label_crops = cell_crops(labels[None], centres, 48)[:, 0]
        assert (label_crops[:, 24, 24] == labels[_pixel(centres)]).all()
        assert (label_crops[:, 24, 24] > 0).all()
        crops = tiles[field.index.to_numpy()]  # the table's rows are the plate's tiles
        middle = crops[:, dapi_channel, 22:27, 22:27].mean(axis=(1, 2))
        assert (middle > np.median(crops[:, dapi_channel], axis=(1, 2))).mean() > 0.95


def test_detection_recall_and_precision_on_synthetic_fields() -> None:
    rng = np.random.default_rng(0)
    matched = drawn = detected = 0
    for _ in range(20):
        planes, truth = render_field_with_cells(Phenotype(), (128, 160), rng)
        found = find_nuclei(planes["DAPI"])[CENTRE].to_numpy()
        distance = np.linalg.norm(truth[:, None] - found[None], axis=2)
        rows, cols = linear_sum_assignment(distance)
        matched += int((distance[rows, cols] <= 6).sum())  # within a nucleus radius
        drawn, detected = drawn + len(truth), detected + len(found)
    recall, precision = matched / drawn, matched / detected
    print(f"{drawn} cells drawn, {detected} found: recall {recall:.3f}, precision "
          f"{precision:.3f}")
    assert recall >= 0.9 and precision >= 0.9


def test_choosing_and_masking_cells() -> None:
    centres = np.array([[10.0, 10.0], [10.0, 20.0], [1.0, 1.0], [30.0, 30.0]])
    assert list(choose_cells(centres, (40, 40), 8)) == [0, 1, 3]  # (1, 1) leaves the field
    assert list(choose_cells(centres, (40, 40), 8, edge="pad")) == [0, 1, 2, 3]
    capped = choose_cells(centres, (40, 40), 8, edge="pad", max_cells=2,
                          rng=np.random.default_rng(1))
    assert len(capped) == 2 and list(capped) == sorted(capped)
    image = np.full((1, 40, 40), 200, np.uint8)
    padded = cell_crops(image, centres[2:3], 8)[0, 0]
    assert (padded[:3, :] == 0).all() and (padded[4:, 4:] == 200).all()  # zeros past the edge
    masked = cell_crops(image, centres[:1], 16, neighbours=centres[:2])[0, 0]
    xs = np.arange(16) + 10 - 8  # the crop's columns in the field
    nearer_other = np.abs(xs - 20) < np.abs(xs - 10)
    assert (masked[:, nearer_other] == 0).all() and (masked[:, ~nearer_other] == 200).all()


def _nuclei_tables(index: pd.DataFrame, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Nuclei found in every field of ``index`` written as CellProfiler would: Nuclei.csv
    (ImageNumber, ObjectNumber, Location_Center_X/Y), its Image.csv, and a LoadData CSV
    (ImageNumber = row number) in a shuffled order."""
    objects, images = [], []
    order = np.random.default_rng(0).permutation(len(index))
    for number, (_, row) in enumerate(index.iloc[order].iterrows(), start=1):
        found = find_nuclei(read_image(row["Path_DAPI"]))
        objects.append(pd.DataFrame({"ImageNumber": number,
                                     "ObjectNumber": found[sc.OBJECT_NUMBER],
                                     "Location_Center_X": found[sc.CP_CENTER_X],
                                     "Location_Center_Y": found[sc.CP_CENTER_Y]}))
        images.append({"ImageNumber": number, "Image_Metadata_Plate": row[sc.PLATE],
                       "Image_Metadata_Well": row[sc.WELL], "Image_Metadata_Site": row[sc.SITE]})
    nuclei = tmp_path / "Nuclei.csv"
    pd.concat(objects).to_csv(nuclei, index=False)
    pd.DataFrame(images).to_csv(tmp_path / "Image.csv", index=False)
    loaddata = pd.DataFrame(images).drop(columns="ImageNumber").rename(
        columns=lambda c: c.removeprefix("Image_"))
    loaddata.to_csv(tmp_path / "load_data.csv", index=False)
    return nuclei, tmp_path / "Image.csv", tmp_path / "load_data.csv"


def test_cellprofiler_locations_give_the_detectors_crops(tiny021, tmp_path) -> None:
    index = read_index(tiny021)
    nuclei, image_csv, loaddata = _nuclei_tables(index, tmp_path)
    cells = {"size": 32, "mask_neighbours": True}
    detected = build_tile_cache(index, PreprocessConfig(tiles="cells", cells=cells),
                                tmp_path / "a", tile_size=32, progress=False)
    for images in (image_csv, loaddata):
        given = PreprocessConfig(tiles="cells", cells={**cells, "locations": nuclei,
                                                       "location_images": images})
        from cellmorph.datasets.cell_locations import read_cell_locations

        locations = read_cell_locations(nuclei, images, index)
        read = build_tile_cache(index, given, tmp_path / images.stem, tile_size=32,
                                progress=False, locations=locations)
        assert read.plates == detected.plates
        assert sum(len(detected.tiles(plate)) for plate in detected.plates) > 20
        for plate in detected.plates:
            np.testing.assert_array_equal(read.tiles(plate), detected.tiles(plate))
            columns = ["Metadata_IndexRow", sc.OBJECT_NUMBER, sc.CELL_X, sc.CELL_Y]
            pd.testing.assert_frame_equal(read.table(plate)[columns],
                                          detected.table(plate)[columns])


def test_cell_location_errors(tiny021, tmp_path, capsys) -> None:
    index = read_index(tiny021)
    nuclei, image_csv, _ = _nuclei_tables(index, tmp_path)
    table = pd.read_csv(nuclei)
    table.drop(columns="Location_Center_Y").to_csv(tmp_path / "no_y.csv", index=False)
    with pytest.raises(CellmorphError, match="no Location_Center_Y column"):
        read_cell_locations(tmp_path / "no_y.csv", image_csv, index)
    with pytest.raises(CellmorphError, match="give the image table"):
        read_cell_locations(nuclei, None, index)
    table.iloc[:0].to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(CellmorphError, match="empty.csv: no objects"):
        read_cell_locations(tmp_path / "empty.csv", image_csv, index)
    table.assign(Location_Center_X=np.where(table.index == 2, np.nan, table["Location_Center_X"])
                 ).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(CellmorphError, match=r"nan.csv: line 4: Location_Center_X is 'nan'"):
        read_cell_locations(tmp_path / "nan.csv", image_csv, index)
    images = pd.read_csv(image_csv)
    images.loc[0, "Image_Metadata_Plate"] = "Week9_99999"
    images.to_csv(tmp_path / "other_plate.csv", index=False)
    with pytest.raises(CellmorphError, match=r"line \d+: object on plate Week9_99999.*index"):
        read_cell_locations(nuclei, tmp_path / "other_plate.csv", index)
    table.loc[3, "Location_Center_X"] = 5000.0
    table.to_csv(tmp_path / "outside.csv", index=False)
    locations = read_cell_locations(tmp_path / "outside.csv", image_csv, index)
    with pytest.raises(CellmorphError, match="x=5000.0.*outside the 80x64 field"):
        build_tile_cache(index, PreprocessConfig(tiles="cells", cells={"size": 32}),
                         tmp_path / "c", tile_size=32, progress=False, locations=locations)
    # The command line: one line naming the file, exit 2, nothing created.
    out = tmp_path / "run"
    config = tmp_path / "profile.yaml"
    config.write_text(yaml.safe_dump({"index": str(tiny021), "output": str(out),
                                      "precision": "fp32", "preprocess": {
        "tiles": "cells", "cells": {"locations": str(tmp_path / "no_y.csv"),
                                    "location_images": str(image_csv)}}}))
    assert main(["profile", str(config)]) == 2
    assert "no_y.csv: no Location_Center_Y column" in capsys.readouterr().err
    assert not out.exists()
    # predict cannot cut a new screen's cells at another screen's nuclei: refused up front.
    from cellmorph.api import _run_index
    from cellmorph.config import ProfileConfig

    located = ProfileConfig(index=str(tiny021), output=str(out), preprocess={
        "tiles": "cells", "cells": {"locations": str(nuclei), "location_images": str(image_csv)}})
    with pytest.raises(CellmorphError, match="covers its own screen only"):
        _run_index(out, located)
    # A screen in which no nucleus is found: one line saying so, not an empty table.
    with pytest.raises(CellmorphError, match="no field of the screen had a cell to profile"):
        api.profile(index=tiny021, output=tmp_path / "none", progress=False, precision="fp32",
                    preprocess={"tiles": "cells", "cells": {"size": 32, "min_area": 10**6}})


def test_profile_cells_writes_per_cell_tables_and_exports(tiny021, tmp_path) -> None:
    run = tmp_path / "run"
    result = api.profile(index=tiny021, output=run, progress=False, precision="fp32",
                         preprocess={"tiles": "cells", "cells": {"size": 32, "edge": "pad"}})
    cells = pd.concat([pd.read_parquet(p) for p in sorted((run / "cells").glob("*.parquet"))],
                      ignore_index=True)
    assert len(cells) > 2 * len(result.images)
    assert {sc.OBJECT_NUMBER, sc.CELL_X, sc.CELL_Y, sc.CELL_COUNT} <= set(cells.columns)
    assert sc.feature_columns(cells) == sc.feature_columns(result.images)
    # Cells -> images is the mean of each field's cells; the well's cell count is the sum of
    # its fields' nuclei (every nucleus found, cropped or not).
    first = result.images.iloc[0]
    mine = cells[(cells[sc.PLATE] == first[sc.PLATE]) & (cells[sc.WELL] == first[sc.WELL])
                 & (cells[sc.SITE] == first[sc.SITE])]
    np.testing.assert_allclose(mine[sc.feature_columns(cells)].mean().to_numpy(),
                               first[sc.feature_columns(cells)].to_numpy(float), rtol=1e-5)
    assert first[sc.COUNT] == len(mine)
    per_well = result.images.groupby(sc.WELL_KEYS)[sc.CELL_COUNT].sum()
    assert (result.wells.set_index(sc.WELL_KEYS)[sc.CELL_COUNT] == per_well).all()
    scored = api.evaluate(run / "profiles_well.parquet", map=False, conformal=False,
                          novelty=False)
    assert len(scored.nn_result("nsc").predictions) == scored.treatments.shape[0] > 0
    assert main(["export", str(run / "cells"), "-o", str(tmp_path / "cells.parquet")]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cells.parquet"), cells)
    assert main(["export", str(run / "cells"), "-o", str(run / "cells" / "x.h5ad")]) == 2
    from test_anndata import read_with_anndata

    assert main(["export", str(run / "cells"), "-o", str(tmp_path / "cells.h5ad")]) == 0
    X, obs, info = read_with_anndata(tmp_path / "cells.h5ad", tmp_path / "read")
    np.testing.assert_array_equal(X, cells[sc.feature_columns(cells)].to_numpy(np.float32))
    assert len(obs) == len(cells)  # one observation per cell
    assert list(obs[sc.OBJECT_NUMBER]) == list(cells[sc.OBJECT_NUMBER])
    np.testing.assert_allclose(obs[sc.CELL_X], cells[sc.CELL_X])


def test_fine_tuning_and_grad_cam_on_cells(tiny021, tmp_path) -> None:
    run = tmp_path / "run"
    result = api.train(index=tiny021, output=run, model="tf_efficientnet_lite0", preset="fast",
                       epochs=1, folds=["emetine", "cytochalasin B"], progress=False,
                       precision="fp32",
                       preprocess={"tiles": "cells", "cells": {"size": 32, "edge": "pad"},
                                   "illumination": False})
    crops = pd.concat([pd.read_parquet(p) for p in
                       (run / "seed0" / "folds").glob("*/predictions.parquet")])
    assert sc.OBJECT_NUMBER in crops.columns  # a prediction per cell ...
    assert crops.groupby(sc.IMAGE_KEYS).size().max() > 1  # ... several a field
    # The median aggregation crop -> image -> well -> treatment, unchanged on cells.
    images = result.seeds[0].levels["image"]
    assert len(images) == crops.groupby(sc.IMAGE_KEYS).ngroups
    assert len(result.seeds[0].levels["treatment"]) == crops[sc.TREATMENT].nunique()
    explained = api.explain(run, size=32, steps=2, filters=1, crops_per_moa=1, progress=False)
    assert explained.crops and all(c.image.shape[:2] == (32, 32) for c in explained.crops)
