"""A run folder belongs to one configuration: refusal with the differing setting named,
--overwrite, resuming, concurrent runs, leftovers of a killed run, provenance."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cellmorph import api
from cellmorph.atomic import folder_lock
from cellmorph.errors import CellmorphError
from cellmorph.runs import PROVENANCE, RUN_RECORD, read_provenance

SMALL = {"grid": [1, 1], "tile_size": 32, "drop_empty": False}


def _profile(index: Path, out: Path, **kw):
    return api.profile(index=index, output=out, progress=False,
                       **{"preprocess": SMALL, "precision": "fp32", **kw})



@pytest.fixture
def tiny021(tiny021_six: Path) -> Path:
    """Six plates are enough here (see conftest), and a third of the work."""
    return tiny021_six

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


@pytest.mark.auto_precision
def test_same_config_resumes_and_provenance_names_the_precision(tiny021: Path,
                                                                 tmp_path: Path) -> None:
    from cellmorph.runtime import auto_precision

    _profile(tiny021, tmp_path / "run", precision="auto")
    stamp = (tmp_path / "run" / "plates").stat().st_mtime_ns
    _profile(tiny021, tmp_path / "run", batch_size=7, precision="auto")  # same results
    assert (tmp_path / "run" / "plates").stat().st_mtime_ns == stamp
    latest = read_provenance(tmp_path / "run")
    model = json.loads((tmp_path / "run" / "run.json").read_text())["fingerprint"]["settings"][
        "model"]
    chosen, why = auto_precision(torch.device("cpu"), "profile", model)  # this CPU's CPU_AUTO row
    assert latest["runtime"]["precision"] == chosen
    assert latest["runtime"]["precision_reason"] == why
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["runtime"]["precision"] == chosen
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"# precision: auto resolved to {chosen} ({why})" in saved
    assert "\nprecision: auto\n" in saved  # the setting stays auto: the file reruns anywhere
    assert latest["runtime"]["device"] == "cpu"
    assert {"torch", "timm", "cellmorph"} <= set(latest["versions"])
    assert latest["index_digest"] and latest["command"]
    history = json.loads((tmp_path / "run" / PROVENANCE).read_text())["invocations"]
    assert len(history) == 2


def test_changed_weights_or_epochs_refuse_a_training_folder(tiny021: Path,
                                                            tmp_path: Path) -> None:
    kw = dict(index=tiny021, output=tmp_path / "t", model="tf_efficientnet_lite0",
              preset="fast", epochs=1, folds=["emetine"], progress=False, precision="fp32",
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
    assert result.summary.folds_done == 2


def test_overwrite_never_deletes_a_folder_that_was_not_a_run(tiny021: Path,
                                                              tmp_path: Path) -> None:
    """BAD case: --overwrite on a folder of the user's own (plates/, figures/, config.yaml
    and no run.json) deleted plates/ and figures/ and replaced config.yaml."""
    mine = tmp_path / "mine"
    for name in ("plates/plate1.csv", "figures/fig.png", "config.yaml", "profiles_well.parquet"):
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text(f"the user's own {name}")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    for overwrite in (False, True):
        with pytest.raises(CellmorphError, match="no cellmorph run record.*only files it wrote"):
            _profile(tiny021, mine, overwrite=overwrite)
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before


def test_overwrite_deletes_only_what_the_run_recorded(tiny021: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _profile(tiny021, run)
    manifest = json.loads((run / RUN_RECORD).read_text())["manifest"]
    assert "plates" in manifest["results"] and "config.yaml" in manifest["kept"]
    (run / "notes.txt").write_text("the user's notes")
    (run / "plates" / "README").write_text("the user's, in a folder cellmorph made")
    _profile(tiny021, run, model="resnet18", weights="random", overwrite=True)
    assert (run / "notes.txt").read_text() == "the user's notes"
    assert not (run / "plates" / "README").exists()  # plates/ was recorded as cellmorph's


@pytest.mark.parametrize("cells", [False, True], ids=["tiles", "cells"])
def test_a_changed_image_redoes_its_plate(tiny021: Path, tmp_path: Path, cells: bool) -> None:
    """BAD case: an image overwritten with other pixels (same name and size, new mtime) and
    the same command rerun reused the plate's old profiles. With cells, the other plates'
    per-cell tables are kept and the changed plate's are redone."""
    import shutil

    import tifffile

    from cellmorph.datasets.bbbc021 import index_bbbc021

    images = tmp_path / "images"
    shutil.copytree(tiny021.parent / "images", images)
    index = index_bbbc021(images, moa_subset=True)
    index = index[index["Metadata_Plate"].isin(pd.read_parquet(tiny021)["Metadata_Plate"])]
    kw = {"preprocess": {"tiles": "cells", "cells": {"size": 32, "edge": "pad"}}} if cells \
        else {}
    first = _profile(index, tmp_path / "run", **kw)
    plates = sorted(index["Metadata_Plate"].unique())
    changed = index[index["Metadata_Plate"] == plates[0]].iloc[0]["Path_DAPI"]
    other = tmp_path / "run" / ("cells" if cells else "plates") / f"{plates[1]}.parquet"
    mine = tmp_path / "run" / ("cells" if cells else "plates") / f"{plates[0]}.parquet"
    other_stamp, mine_stamp = other.stat().st_mtime_ns, mine.stat().st_mtime_ns
    pixels = tifffile.imread(changed)
    time.sleep(0.01)
    tifffile.imwrite(changed, pixels[::-1].copy())  # other pixels, same size
    second = _profile(index, tmp_path / "run", **kw)
    assert other.stat().st_mtime_ns == other_stamp  # the unchanged plate is kept
    assert mine.stat().st_mtime_ns != mine_stamp  # the changed plate is redone
    features = [c for c in first.images.columns if c.startswith("Feature_")]
    key = first.images["Metadata_Plate"] == plates[0]
    assert not np.allclose(first.images.loc[key, features].to_numpy(),
                           second.images.loc[key, features].to_numpy())
    fresh = _profile(index, tmp_path / "fresh", **kw)
    pd.testing.assert_frame_equal(second.wells, fresh.wells)


def test_a_changed_image_refuses_a_training_folder(tiny021: Path, tmp_path: Path) -> None:
    import shutil

    from cellmorph.datasets.bbbc021 import index_bbbc021

    images = tmp_path / "images"
    shutil.copytree(tiny021.parent / "images", images)
    index = index_bbbc021(images, moa_subset=True)
    index = index[index["Metadata_Plate"].isin(pd.read_parquet(tiny021)["Metadata_Plate"])]
    kw = dict(index=index, output=tmp_path / "t", model="tf_efficientnet_lite0", preset="fast",
              epochs=1, folds=["emetine"], progress=False, precision="fp32",
              preprocess={"grid": [1, 1], "tile_size": 32, "illumination": False})
    api.train(**kw)
    path = Path(index.iloc[0]["Path_Actin"])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(CellmorphError, match=r"the images of plate \S+ changed.*--overwrite"):
        api.train(**kw)


def test_a_failed_run_does_not_claim_its_folder(tiny021: Path, tmp_path: Path) -> None:
    for bad in ({"model": "no_such_model"}, {"weights": str(tmp_path / "missing.pth")},
                {"device": "cuda:7"}, {"executor": "ray", "ray_address": "127.0.0.1:1"}):
        with pytest.raises(CellmorphError):
            _profile(tiny021, tmp_path / "new", **bad)
        assert not (tmp_path / "new").exists(), bad
    # A run that failed after taking its folder, before any result: the retry with other
    # settings is not refused.
    bad_weights = tmp_path / "bad.safetensors"
    bad_weights.write_bytes(b"not weights")
    with pytest.raises(CellmorphError, match="cannot be loaded as weights"):
        _profile(tiny021, tmp_path / "new", weights=str(bad_weights))
    assert not (tmp_path / "new").exists()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / RUN_RECORD).write_text(json.dumps(
        {"format": 2, "kind": "profile", "fingerprint": {"settings": {"model": "x"}},
         "manifest": {"results": ["plates"], "kept": ["config.yaml"]}}))
    _profile(tiny021, tmp_path / "new")
    assert (tmp_path / "new" / "profiles_well.parquet").is_file()


def test_the_fingerprint_is_of_what_the_run_resolves_to(tiny021: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from cellmorph.config import TrainConfig
    from cellmorph.runs import fingerprint

    runtime = {"device": "cpu", "precision": "fp32"}
    relative = TrainConfig(index="index.parquet", output="o", model="resnet18", preset="fast")
    absolute = TrainConfig(index=str(tmp_path / "index.parquet"), output="o",
                           model="resnet18", preset="fast", batch_size=32, epochs=5)
    assert fingerprint(relative, "train", runtime, "d") == fingerprint(absolute, "train",
                                                                        runtime, "d")
    other = absolute.model_copy(update={"batch_size": 16})
    assert fingerprint(other, "train", runtime, "d") != fingerprint(absolute, "train",
                                                                     runtime, "d")
    # The same index by another path, from another folder, resumes.
    _profile(tiny021, tmp_path / "run")
    stamp = (tmp_path / "run" / "plates").stat().st_mtime_ns
    monkeypatch.chdir(tiny021.parent)
    _profile(Path("index.parquet"), tmp_path / "run")
    assert (tmp_path / "run" / "plates").stat().st_mtime_ns == stamp


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


def test_only_this_programs_leftovers_are_removed(tiny021: Path, tmp_path: Path) -> None:
    """BAD case: any *.part file anywhere below the output folder (a user's download) was
    deleted by every profile run."""
    run = tmp_path / "run"
    _profile(tiny021, run)
    ours = run / "plates" / ".Week1_22123.parquet.abc123.cellmorph.part"
    ours.write_bytes(b"half a file")
    users = [run / "downloads" / "BBBC021_v1_images_Week1_22123.zip.part",
             run / "plates" / "notes.part", run / ".x.cellmorph.part.keep"]
    for path in users:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"the user's")
    time.sleep(0.01)
    _profile(tiny021, run)
    assert not ours.exists()
    assert all(p.read_bytes() == b"the user's" for p in users)


def test_an_edited_run_record_cannot_point_a_deletion_outside(tiny021: Path,
                                                              tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the user's")
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_RECORD).write_text(json.dumps(
        {"format": 2, "kind": "profile", "fingerprint": {},
         "manifest": {"results": ["../outside", str(outside), "..", ""], "kept": []}}))
    _profile(tiny021, run, overwrite=True)
    assert (outside / "keep.txt").read_text() == "the user's"
    manifest = json.loads((run / RUN_RECORD).read_text())["manifest"]
    assert all("/" not in n and n != ".." for n in manifest["results"])


def test_the_runs_own_input_inside_its_folder_is_never_claimed(tiny021: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    index = shutil.copy(tiny021, run / "index.parquet")  # the user indexed into the folder
    before = Path(index).read_bytes()
    _profile(Path(index), run)
    _profile(Path(index), run, model="resnet18", weights="random", overwrite=True)
    assert Path(index).read_bytes() == before
    assert "index.parquet" not in json.loads((run / RUN_RECORD).read_text())["manifest"]["kept"]


def test_a_run_that_failed_in_preprocessing_does_not_claim_its_folder(tiny021: Path,
                                                                      tmp_path: Path) -> None:
    import shutil

    from cellmorph.datasets.bbbc021 import index_bbbc021

    images = tmp_path / "images"
    shutil.copytree(tiny021.parent / "images", images)
    index = index_bbbc021(images, moa_subset=True)
    index = index[index["Metadata_Plate"].isin(pd.read_parquet(tiny021)["Metadata_Plate"])]
    broken = Path(index.iloc[0]["Path_DAPI"])
    whole = broken.read_bytes()
    broken.write_bytes(whole[: len(whole) // 3])  # truncated
    with pytest.raises(CellmorphError, match="unreadable or truncated image"):
        _profile(index, tmp_path / "run")
    broken.write_bytes(whole)
    _profile(index, tmp_path / "run", model="resnet18", weights="random")  # not refused
    assert (tmp_path / "run" / "profiles_well.parquet").is_file()


def test_a_cache_elsewhere_leaves_the_name_cache_to_the_user(tiny021: Path,
                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)
    (run / "cache" / "mine.txt").write_text("the user's")
    _profile(tiny021, run, cache_dir=tmp_path / "shared")  # not refused: no claim on cache/
    _profile(tiny021, run, cache_dir=tmp_path / "shared", model="resnet18", weights="random",
             overwrite=True)
    assert (run / "cache" / "mine.txt").read_text() == "the user's"
    assert "cache" not in json.loads((run / RUN_RECORD).read_text())["manifest"]["kept"]


def test_a_saved_config_reruns_the_same_run_from_another_folder(tiny021: Path, tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The run's config.yaml holds absolute paths (a run started with relative ones from one
    folder), so `cellmorph profile RUN/config.yaml` from anywhere else is the same run: it
    resumes, redoes nothing, and writes nothing where it was started."""
    import shutil

    import yaml

    from cellmorph.cli import main

    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    shutil.copy(tiny021, first / "index.parquet")
    monkeypatch.chdir(first)
    _profile(Path("index.parquet"), Path("run"))
    saved = yaml.safe_load((first / "run" / "config.yaml").read_text())
    assert saved["index"] == str(first / "index.parquet")
    assert saved["output"] == str(first / "run")
    plates = sorted((first / "run").glob("plates/*.parquet"))
    stamps = {p: p.stat().st_mtime_ns for p in plates}
    wells = pd.read_parquet(first / "run" / "profiles_well.parquet")
    monkeypatch.chdir(elsewhere)
    assert main(["profile", str(first / "run" / "config.yaml"), "-q"]) == 0
    assert plates and {p: p.stat().st_mtime_ns for p in plates} == stamps  # nothing redone
    pd.testing.assert_frame_equal(pd.read_parquet(first / "run" / "profiles_well.parquet"),
                                  wells)
    assert list(elsewhere.iterdir()) == []


def test_keep_cache_false_deletes_the_runs_own_cache_and_resumes(tiny021: Path,
                                                                 tmp_path: Path) -> None:
    """`keep_cache: false` deletes the run's recorded cache once every plate is profiled; a
    rerun resumes from the per-plate results (nothing redone, no cache rebuilt), and a shared
    cache_dir, not the run's own, is never deleted."""
    first = _profile(tiny021, tmp_path / "run", keep_cache=False)
    assert not (tmp_path / "run" / "cache").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "plates").iterdir()}
    again = _profile(tiny021, tmp_path / "run", keep_cache=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "plates").iterdir()} == stamps
    assert not (tmp_path / "run" / "cache").exists()
    pd.testing.assert_frame_equal(again.wells, first.wells)
    _profile(tiny021, tmp_path / "shared-run", keep_cache=False, cache_dir=tmp_path / "shared")
    assert any((tmp_path / "shared").iterdir())
