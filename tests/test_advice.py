"""Every error that gives advice gives advice that works: each case below provokes an
advice-bearing error of `index`, `profile`, `train` or `evaluate`, follows the advice as a
user would, and checks that the command then gets past that error (it succeeds, or stops at
a different, later problem), never back to itself."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cellmorph import schema as sc
from cellmorph.cli import main
from cellmorph.profiling.cellprofiler import read_profiles


def _error(capsys, args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err.strip()


def _follow(capsys, broken: list[str], advice: str, fixed: list[str]) -> None:
    """``broken`` fails with ``advice`` in its one error line; ``fixed`` (the advice
    followed) succeeds, or fails with another error."""
    code, err = _error(capsys, broken)
    assert code == 2 and advice in err, err
    assert err.count("\n") == 0, err  # one line
    code, again = _error(capsys, fixed)
    assert code == 0 or again != err, again


def _plate_map(folder: Path, *, missing: bool = False) -> Path:
    import numpy as np
    import tifffile

    (folder / "img").mkdir(exist_ok=True)
    rows = []
    for i, (compound, dose) in enumerate([("DMSO", 0), ("DMSO", 0), ("x", 1), ("x", 2)]):
        for stain in ("dapi", "actin"):
            tifffile.imwrite(folder / "img" / f"{i}_{stain}.tif",
                             np.full((16, 16), i, np.uint16))
        rows.append({"plate": "P1", "well": f"A0{i + 1}", "site": 1, "compound": compound,
                     "concentration": dose, "path_dapi": f"img/{i}_dapi.tif",
                     "path_actin": f"img/{i}_actin.tif"})
    if missing:
        rows[2]["path_actin"] = "img/lost.tif"
    pd.DataFrame(rows).to_csv(folder / "pm.csv", index=False)
    return folder / "pm.csv"


def test_index_missing_image_advice(tmp_path, capsys) -> None:
    pm = str(_plate_map(tmp_path, missing=True))
    _follow(capsys, ["index", "platemap", pm, "-o", str(tmp_path / "i.parquet")],
            "or pass --no-check-files to index anyway",
            ["index", "platemap", pm, "-o", str(tmp_path / "i.parquet"), "--no-check-files"])


def test_index_no_stain_columns_advice(tmp_path, capsys) -> None:
    pm = _plate_map(tmp_path)
    table = pd.read_csv(pm)
    table.rename(columns={"path_dapi": "dapi", "path_actin": "actin"}).to_csv(
        tmp_path / "bad.csv", index=False)
    _follow(capsys, ["index", "platemap", str(tmp_path / "bad.csv")],
            "add one column per channel, e.g. path_dapi",
            ["index", "platemap", str(pm)])


def test_evaluate_plate_without_controls_advice(tmp_path, capsys) -> None:
    wells = read_profiles("ljosa2013")
    plate = wells[sc.PLATE].iloc[0]
    without = wells[~((wells[sc.PLATE] == plate) & sc.is_control(wells))]
    without.to_parquet(tmp_path / "wells.parquet")
    args = ["evaluate", str(tmp_path / "wells.parquet"), "--no-map", "-o", str(tmp_path / "e")]
    # Followed in the British spelling, which the command line takes as well.
    _follow(capsys, args, "--normalize-by global", [*args, "--normalise-by", "global"])


def test_misspelt_config_key_advice(tmp_path, capsys) -> None:
    config = {"index": str(tmp_path / "none.parquet"), "output": str(tmp_path / "run"),
              "modle": "tf_efficientnet_lite0"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    config["model"] = config.pop("modle")
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(config))
    _follow(capsys, ["profile", str(tmp_path / "c.yaml")], "(did you mean model?)",
            ["profile", str(tmp_path / "fixed.yaml")])


def test_unknown_preset_advice(tmp_path, capsys, tiny021_six) -> None:
    base = ["profile", "--index", str(tiny021_six), "-o", str(tmp_path / "run"),
            "--precision", "fp32", "-q"]
    _follow(capsys, [*base, "--preprocess", "grid=1"], "give settings as JSON",
            [*base, "--preprocess", '{"grid": [1, 1], "tile_size": 32}'])


def test_single_compound_moa_advice(tmp_path, capsys, tiny021_six) -> None:
    index = pd.read_parquet(tiny021_six)
    labelled = sc.is_treatment(index)
    moa = index.loc[labelled, sc.MOA].iloc[0]
    keep = index.loc[labelled & (index[sc.MOA] == moa), sc.COMPOUND].iloc[0]
    alone = index[~(labelled & (index[sc.MOA] == moa) & (index[sc.COMPOUND] != keep))]
    alone.to_parquet(tmp_path / "alone.parquet")
    dropped = alone[~(sc.is_treatment(alone) & (alone[sc.MOA] == moa))]
    dropped.to_parquet(tmp_path / "dropped.parquet")
    args = ["train", "-o", str(tmp_path / "run"), "--model", "tf_efficientnet_lite0",
            "--preset", "fast", "--epochs", "1", "--precision", "fp32", "-q"]
    _follow(capsys, [*args, "--index", str(tmp_path / "alone.parquet")],
            "add compounds or drop these MoAs",
            [*args, "--index", str(tmp_path / "dropped.parquet")])


@pytest.mark.slow
def test_changed_configuration_advice(tmp_path, capsys, tiny021_six) -> None:
    base = ["profile", "--index", str(tiny021_six), "-o", str(tmp_path / "run"),
            "--precision", "fp32", "--preprocess", '{"grid": [1, 1], "tile_size": 32}', "-q"]
    assert main(base) == 0
    changed = [*base, "--weights", "random"]
    _follow(capsys, changed, "rerun with --overwrite", [*changed, "--overwrite"])
