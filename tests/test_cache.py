"""The tile cache: keyed by everything that decides the tiles, resumable, and the same tiles
whether plates are preprocessed here or in worker processes beside the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cellmorph import cache as cache_module
from cellmorph import schema as sc
from cellmorph.cache import (
    TileCache,
    build_tile_cache,
    cache_key,
    iter_tile_cache,
    ordered_map,
    preprocess_plate,
)
from cellmorph.config import PreprocessConfig
from cellmorph.datasets.index import read_index

CFG = PreprocessConfig(grid=(2, 2), drop_empty=False)


@pytest.fixture()
def index(tiny021: Path):
    return read_index(tiny021)


def test_workers_give_the_same_tiles(index, tmp_path: Path) -> None:
    here = build_tile_cache(index, CFG, tmp_path / "a", tile_size=32, progress=False)
    ready = [plate for _, plate in iter_tile_cache(index, CFG, tmp_path / "b", tile_size=32,
                                                   workers=2, progress=False)]
    assert sorted(ready) == sorted(here.plates)  # every plate, as it became ready
    there = TileCache.open(next((tmp_path / "b").iterdir()))
    for plate in here.plates:
        np.testing.assert_array_equal(here.tiles(plate), there.tiles(plate))
        assert here.table(plate).equals(there.table(plate))


def test_cache_is_keyed_by_settings_fields_and_files(index, tmp_path: Path) -> None:
    key = cache_key(index, CFG, 32)
    assert cache_key(index, CFG, 48) != key
    assert cache_key(index, CFG.model_copy(update={"anscombe": True}), 32) != key
    assert cache_key(index.iloc[1:], CFG, 32) != key
    # a GPU's resizing rounds differently: its tiles are cached apart from the CPU's
    assert cache_key(index, CFG, 32, "cpu") == key != cache_key(index, CFG, 32, "cuda:0")
    path = index[sc.path_column("DAPI")].iloc[0]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the image was re-exported
    try:
        assert cache_key(index, CFG, 32) != key
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_plate_cached_before_is_not_redone(index, tmp_path: Path) -> None:
    cache = build_tile_cache(index, CFG, tmp_path, tile_size=32, progress=False)
    table = cache.folder / f"{cache.plates[0]}.parquet"
    stamp = table.stat().st_mtime_ns
    (cache.folder / f"{cache.plates[1]}.parquet").unlink()  # as if interrupted there
    again = build_tile_cache(index, CFG, tmp_path, tile_size=32, progress=False)
    assert table.stat().st_mtime_ns == stamp
    assert (again.folder / f"{cache.plates[1]}.parquet").is_file()
    assert TileCache.open(again.folder).channels == ("DAPI", "Tubulin", "Actin")


CONFIGS = [
    CFG,
    PreprocessConfig(tiles="random", random_count=3, random_size=(24, 24), resize=(48, 60),
                     anscombe=True, control_normalise=True, rescale="image"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["grid", "random-resized"])
def test_threads_and_held_fields_do_not_change_the_tiles(index, cfg, monkeypatch) -> None:
    plate = index[index[sc.PLATE] == sorted(index[sc.PLATE].unique())[0]]
    channels = sc.channels_of(index)
    tiles, table, _ = preprocess_plate(plate, channels, cfg, 32, threads=1)
    for threads, held in ((3, cache_module.HELD_FIELDS_BYTES), (2, 0)):
        monkeypatch.setattr(cache_module, "HELD_FIELDS_BYTES", held)  # 0: read every field twice
        other, other_table, _ = preprocess_plate(plate, channels, cfg, 32, threads=threads)
        np.testing.assert_array_equal(tiles, other)
        assert table.equals(other_table)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU; the CPU's tiles are the reference")
@pytest.mark.parametrize("cfg", CONFIGS, ids=["grid", "random-resized"])
def test_a_gpu_preprocesses_to_the_cpus_tiles(index, cfg) -> None:
    """The same code on the GPU: equal arithmetic, and resizing through float32 instead of
    the CPU's fixed-point uint8 path (one grey level per resize at most)."""
    plate = index[index[sc.PLATE] == sorted(index[sc.PLATE].unique())[0]]
    channels = sc.channels_of(index)
    on_cpu, table, _ = preprocess_plate(plate, channels, cfg, 32, threads=2)
    on_gpu, gpu_table, _ = preprocess_plate(plate, channels, cfg, 32, threads=2, device="cuda")
    diff = np.abs(on_cpu.astype(int) - on_gpu.astype(int))
    assert on_gpu.dtype == np.uint8 and diff.max() <= 2 and diff.mean() < 0.5
    assert table.drop(columns=cache_module.KEEP).equals(gpu_table.drop(columns=cache_module.KEEP))


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight() -> None:
    started: list[int] = []

    def slow_square(i: int) -> int:
        started.append(i)
        return i * i

    results = ordered_map(slow_square, range(50), threads=3)
    assert next(results) == 0
    assert len(started) <= 2 * 3 + 1  # not every item submitted at once
    assert [0, *results] == [i * i for i in range(50)]


def _copied_plate(index, tmp_path: Path):
    """One plate of the tiny set, its images copied (to be changed by a test)."""
    import shutil

    plate = index[index[sc.PLATE] == sorted(index[sc.PLATE].unique())[0]].copy()
    for column in [sc.path_column(c) for c in sc.channels_of(plate)]:
        copies = []
        for path in plate[column]:
            copies.append(str(tmp_path / Path(path).name))
            shutil.copy(path, copies[-1])
        plate[column] = copies
    return plate.reset_index(drop=True)


def test_a_constant_field_is_left_out_not_mixed_into_the_plate(index, tmp_path: Path,
                                                               caplog) -> None:
    import tifffile

    plate = _copied_plate(index, tmp_path)
    channels = sc.channels_of(plate)
    cfg = PreprocessConfig(grid=(1, 1), drop_empty=False)
    clean, clean_table, _ = preprocess_plate(plate, channels, cfg, 32)
    blank = plate.iloc[0][sc.path_column(channels[1])]
    tifffile.imwrite(blank, np.zeros_like(tifffile.imread(blank)))
    extra = plate.iloc[[0]].assign(**{sc.WELL: "P24"})  # the blank field, and a copy of it
    tiles, table, _ = preprocess_plate(pd.concat([plate, extra], ignore_index=True), channels,
                                       cfg, 32)
    assert "2 field(s) have a stain that is one value everywhere" in caplog.text
    assert not table[cache_module.KEEP].iloc[[0, -1]].any()
    assert table[cache_module.KEEP].iloc[1:-1].all()
    # Every other field is preprocessed as it was without the blank one there, except that
    # the plate's statistics now come from one field less.
    others = slice(1, len(plate))
    with_blank_left_out, *_ = preprocess_plate(plate.iloc[1:], channels, cfg, 32)
    np.testing.assert_array_equal(tiles[others], with_blank_left_out)
    assert not np.array_equal(clean[others], with_blank_left_out) or len(plate) == 1
    assert clean_table[cache_module.KEEP].all()


def test_a_field_of_another_size_is_blamed_not_the_first_one_read(index, tmp_path: Path) -> None:
    import tifffile

    from cellmorph.cache import cache_plate
    from cellmorph.errors import CellmorphError

    plate = _copied_plate(index, tmp_path)
    odd = plate.iloc[0][sc.path_column("DAPI")]  # the first field: read first
    tifffile.imwrite(odd, np.zeros((40, 40), np.uint16) + 7)
    with pytest.raises(CellmorphError, match=rf"1 of \d+ images differ.*{Path(odd).name} "
                                             r"\(40x40 uint16\)"):
        cache_plate(tmp_path, plate, sc.channels_of(plate), CFG, 32)
