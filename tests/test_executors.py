"""Folds and plates on Ray (a local Ray, num_cpus=2): the same predictions and the same
per-plate tables as the sequential path, exactly; resuming works across executors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from cellmorph import api
from cellmorph.errors import CellmorphError
from cellmorph.executors import connect, map_tasks
from cellmorph.training.fold_jobs import fold_dir

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'cellmorph[ray]'")

TRAIN = dict(model="tf_efficientnet_lite0", preset="fast", epochs=1, progress=False,
             precision="fp32",
             folds=["emetine", "cytochalasin B", "anisomycin"],
             preprocess={"grid": [1, 1], "tile_size": 32, "illumination": False})
PROFILE = dict(preprocess={"grid": [1, 1], "tile_size": 32, "drop_empty": False},
               precision="fp32", progress=False)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    connect(None, num_cpus=2)
    yield
    ray.shutdown()



@pytest.fixture
def tiny021(tiny021_six: Path) -> Path:
    """Six plates are enough here (see conftest), and a third of the work."""
    return tiny021_six

def test_folds_on_ray_equal_the_sequential_run(tiny021: Path, tmp_path: Path) -> None:
    api.train(index=tiny021, output=tmp_path / "local", **TRAIN)
    # Half the folds first, locally; the rest on Ray: resuming works across executors.
    api.train(index=tiny021, output=tmp_path / "ray", **{**TRAIN, "folds": TRAIN["folds"][:1]})
    result = api.train(index=tiny021, output=tmp_path / "ray", executor="ray", **TRAIN)
    assert result.summary.folds_done == 3
    for fold in TRAIN["folds"]:
        a = pd.read_parquet(fold_dir(tmp_path / "local" / "seed0", fold) / "predictions.parquet")
        b = pd.read_parquet(fold_dir(tmp_path / "ray" / "seed0", fold) / "predictions.parquet")
        pd.testing.assert_frame_equal(a, b)  # exactly


def test_weak_label_training_on_ray_equals_the_local_run(tiny021: Path, tmp_path: Path) -> None:
    weak = {**TRAIN, "folds": None, "label": "compound", "freeze_stages": 5,
            "cached_trunk": True}
    local = api.train(index=tiny021, output=tmp_path / "local", **weak)
    on_ray = api.train(index=tiny021, output=tmp_path / "ray", executor="ray", **weak)
    a, b = (load_file(str(r.models[0])) for r in (local, on_ray))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # exactly


def test_plates_on_a_ray_actor_pool_equal_the_local_path(tiny021: Path, tmp_path: Path,
                                                         capfd: pytest.CaptureFixture) -> None:
    local = api.profile(index=tiny021, output=tmp_path / "local", **PROFILE)
    capfd.readouterr()
    on_ray = api.profile(index=tiny021, output=tmp_path / "ray", executor="ray", **PROFILE)
    # Progress bars are off on purpose: Ray Data (whose loggers write to stderr themselves)
    # must not warn about it.
    assert "Progress bars" not in capfd.readouterr().err
    plates = sorted((tmp_path / "local" / "plates").glob("*.parquet"))
    assert len(plates) == local.images["Metadata_Plate"].nunique()
    for path in plates:
        pd.testing.assert_frame_equal(pd.read_parquet(path),
                                      pd.read_parquet(tmp_path / "ray" / "plates" / path.name))
    pd.testing.assert_frame_equal(local.wells, on_ray.wells)


def test_errors_on_ray_come_back_as_one_line(tmp_path: Path) -> None:
    from cellmorph.datasets.index import read_index  # importable on every worker

    with pytest.raises(CellmorphError, match=r"^index file .*nope\.parquet not found; create "
                                             r"it with `cellmorph index`$"):
        map_tasks(read_index, [tmp_path / "nope.parquet"], threads=1, use_gpu=False)


def test_a_cluster_address_where_nothing_answers_fails_in_seconds(tiny021: Path,
                                                                   tmp_path: Path) -> None:
    """BAD case: a plain HOST:PORT with no cluster there hung for minutes (Ray retries its GCS
    connection); now the run stops within seconds, before creating anything."""
    import time

    start = time.monotonic()
    with pytest.raises(CellmorphError, match="nothing answered at ray_address 127.0.0.1:1.*"
                                             "ray start --head"):
        api.profile(index=tiny021, output=tmp_path / "run", executor="ray",
                    ray_address="127.0.0.1:1", precision="fp32", progress=False)
    assert time.monotonic() - start < 15
    assert not (tmp_path / "run").exists()
