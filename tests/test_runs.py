"""A run folder belongs to one configuration: refusal with the differing setting named,
--overwrite, resuming, concurrent runs, leftovers of a killed run, provenance."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pandas as pd
import pytest

from cellmorph import api
from cellmorph.atomic import folder_lock
from cellmorph.errors import CellmorphError
from cellmorph.runs import PROVENANCE, RUN_RECORD, read_provenance

SMALL = {"grid": [1, 1], "tile_size": 32, "drop_empty": False}


def _profile(index: Path, out: Path, **kw):
    return api.profile(index=index, output=out, preprocess=SMALL, progress=False, **kw)


def test_changed_model_is_refused_then_overwritten(tiny021: Path, tmp_path: Path) -> None:
    first = _profile(tiny021, tmp_path / "run")
    n_lite = sum(c.startswith("Feature_") for c in first.wells.columns)
    with pytest.raises(CellmorphError, match=r"model: tf_efficientnet_lite0 \(in the folder\) "
                                             r"-> resnet18 \(now\).*--overwrite"):
        _profile(tiny021, tmp_path / "run", model="resnet18", weights="random")
    # The folder is untouched by the refused run.
    assert json.loads((tmp_path / "run" / RUN_RECORD).read_text())["fingerprint"][
        "settings"]["model"] == "tf_efficientnet_lite0"
    second = _profile(tiny021, tmp_path / "run", model="resnet18", weights="random",
                      overwrite=True)
    wells = pd.read_parquet(tmp_path / "run" / "profiles_well.parquet")
    n_resnet = sum(c.startswith("Feature_") for c in wells.columns)
    assert (n_lite, n_resnet) == (3 * 1280, 3 * 512)
    assert len(second.wells) == len(first.wells)


def test_same_config_resumes_and_provenance_names_the_precision(tiny021: Path,
                                                                 tmp_path: Path) -> None:
    _profile(tiny021, tmp_path / "run")
    stamp = (tmp_path / "run" / "plates").stat().st_mtime_ns
    _profile(tiny021, tmp_path / "run", batch_size=7)  # batch size does not change results
    assert (tmp_path / "run" / "plates").stat().st_mtime_ns == stamp
    latest = read_provenance(tmp_path / "run")
    assert latest["runtime"]["precision"] in ("fp32", "bf16")
    assert latest["runtime"]["device"] == "cpu"
    assert {"torch", "timm", "cellmorph"} <= set(latest["versions"])
    assert latest["index_digest"] and latest["command"]
    history = json.loads((tmp_path / "run" / PROVENANCE).read_text())["invocations"]
    assert len(history) == 2


def test_changed_weights_or_epochs_refuse_a_training_folder(tiny021: Path,
                                                            tmp_path: Path) -> None:
    kw = dict(index=tiny021, output=tmp_path / "t", model="tf_efficientnet_lite0",
              preset="fast", epochs=1, folds=["emetine"], progress=False,
              preprocess={"grid": [1, 1], "tile_size": 32, "illumination": False})
    api.train(**kw)
    history = tmp_path / "t" / "seed0" / "folds"
    for change in ({"epochs": 2}, {"weights": "xavier"}):
        with pytest.raises(CellmorphError, match="different configuration"):
            api.train(**{**kw, **change})
    api.train(**{**kw, "epochs": 2}, overwrite=True)
    hist = json.loads(next(history.glob("*/history.json")).read_text())
    assert len(hist["train_loss"]) == 2  # new results, not the old 1-epoch fold
    # Adding a fold (or a seed) to a finished run resumes: folds are independent.
    result = api.train(**{**kw, "epochs": 2, "folds": ["emetine", "cytochalasin B"]})
    assert result.summary["folds_done"] == 2


def test_unrecorded_results_are_refused(tiny021: Path, tmp_path: Path) -> None:
    (tmp_path / "old" / "plates").mkdir(parents=True)
    (tmp_path / "old" / "profiles_well.parquet").write_bytes(b"made by an older version")
    with pytest.raises(CellmorphError, match="not recorded.*--overwrite"):
        _profile(tiny021, tmp_path / "old")


def _hold_lock(folder: str, ready, release) -> None:
    with folder_lock(Path(folder)):
        ready.set()
        release.wait(30)


def test_a_second_concurrent_run_is_refused_and_a_killed_one_does_not_block(
        tiny021: Path, tmp_path: Path) -> None:
    folder = tmp_path / "busy"
    folder.mkdir()
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(CellmorphError, match="another cellmorph run is writing to"):
        _profile(tiny021, folder)
    holder.kill()  # a killed run: the OS releases its lock
    holder.join()
    _profile(tiny021, folder)
    assert (folder / "profiles_well.parquet").is_file()


def test_leftover_part_files_are_removed(tiny021: Path, tmp_path: Path) -> None:
    _profile(tiny021, tmp_path / "run")
    part = tmp_path / "run" / "plates" / ".Week1_22123.parquet.abc.part"
    part.write_bytes(b"half a file")
    time.sleep(0.01)
    _profile(tiny021, tmp_path / "run")
    assert not part.exists()
