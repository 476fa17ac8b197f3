"""The tile cache: fields of view preprocessed once into uint8 tiles, per plate.

Decoding 16-bit TIFFs and preprocessing them is kept off the hot path: each plate becomes one
``.npy`` array of tiles (memory-mapped when read) and a Parquet table saying which field and
grid position each tile came from. A cache folder is keyed by the preprocessing settings
and the index, and built plate by plate, so an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cellmorph import schema as sc
from cellmorph.atomic import (
    ensure_writable_dir,
    folder_lock,
    remove_partial_files,
    write_npy,
    write_parquet,
    write_text,
)
from cellmorph.config import PreprocessConfig
from cellmorph.errors import CellmorphError
from cellmorph.imageio import FieldMismatch, odd_images, read_field
from cellmorph.log import get_logger
from cellmorph.log import progress as progress_bar
from cellmorph.preprocess import (
    anscombe,
    control_statistics,
    correct_illumination,
    grid_tiles,
    illumination_function,
    nonempty_tiles,
    normalise_to_controls,
    random_tiles,
    rescale_to_uint8,
    resize_stack,
    to_device,
)
from cellmorph.preprocess.arrays import Image, as_tensor, like
from cellmorph.preprocess.cells import cell_crops, choose_cells
from cellmorph.preprocess.nuclei import NucleusSettings, find_nuclei
from cellmorph.preprocess.quality import MEASURES as QUALITY_MEASURES
from cellmorph.preprocess.quality import field_quality

log = get_logger(__name__)
TILE = "Metadata_Tile"
KEEP = "Metadata_TileKept"
ROW = "Metadata_IndexRow"
CACHE_FORMAT = 6  # bump when the tiles of the same settings (or what is kept beside them) change
QUALITY_SUFFIX = ".quality.parquet"  # a plate's per-field image quality, beside its tiles
QC_PREFIX, BLANK = "QC_", "QC_Blank"
# Plate statistics are estimated on every 7th pixel in both directions (2 % of pixels):
# accurate to well under 1 % and keeps one plate's worth of samples small in memory.
_STRIDE = 7
HELD_FIELDS_BYTES = 512 * 2**20  # decoded fields of one plate kept between the two passes


@dataclass(frozen=True)
class TileCache:
    """A built cache: per-plate tile arrays and tables under ``folder``."""

    folder: Path
    plates: tuple[str, ...]
    channels: tuple[str, ...] = ()

    def tiles(self, plate: str) -> np.ndarray:
        """The plate's tiles, (N, C, S, S) uint8, memory-mapped."""
        return np.load(self.folder / f"{safe_name(plate)}.npy", mmap_mode="r")

    def table(self, plate: str) -> pd.DataFrame:
        """One row per tile: index metadata, tile number, and whether it passed the filter."""
        return pd.read_parquet(self.folder / f"{safe_name(plate)}.parquet")

    @classmethod
    def open(cls, folder: Path | str) -> TileCache:
        """A cache built earlier (by :func:`build_tile_cache`), from its folder alone."""
        folder = Path(folder)
        try:
            settings = json.loads((folder / "settings.json").read_text())
        except (OSError, ValueError) as exc:
            raise CellmorphError(f"tile cache {folder} is missing or damaged ({exc}); delete it "
                                 "and rerun") from None
        return cls(folder, tuple(settings["plates"]), tuple(settings["channels"]))

    def quality(self, plate: str) -> pd.DataFrame:
        """The plate's fields' image quality (one row a field; ``QC_<stain>_<measure>``)."""
        return pd.read_parquet(self.folder / f"{safe_name(plate)}{QUALITY_SUFFIX}")

    def iter_plates(self) -> Iterator[tuple[str, pd.DataFrame, np.ndarray]]:
        """(plate, table, tiles) for each plate."""
        for plate in self.plates:
            yield plate, self.table(plate), self.tiles(plate)


class TileStore:
    """All plates' kept tiles behind one position axis, read lazily from the memory maps."""

    def __init__(self, cache: TileCache) -> None:
        tables, self._maps, offsets = [], [], [0]
        for _plate, table, tiles in cache.iter_plates():
            kept = np.flatnonzero(table[KEEP].to_numpy())
            tables.append(table.iloc[kept].assign(Metadata_PlateTile=kept))
            self._maps.append((tiles, kept))
            offsets.append(offsets[-1] + len(kept))
        self.table = pd.concat(tables, ignore_index=True)
        self._offsets = np.asarray(offsets)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def take(self, positions) -> np.ndarray:
        """uint8 tiles (len(positions), C, S, S) at the given store positions."""
        positions = np.asarray(positions, dtype=np.int64)
        plate_of = np.searchsorted(self._offsets, positions, side="right") - 1
        out = None
        for p in np.unique(plate_of):
            sel = plate_of == p
            tiles, kept = self._maps[p]
            chunk = tiles[kept[positions[sel] - self._offsets[p]]]
            if out is None:
                out = np.empty((len(positions), *chunk.shape[1:]), chunk.dtype)
            out[sel] = chunk
        return out


def cache_key(index: pd.DataFrame, cfg: PreprocessConfig, tile_size: int,
              device: torch.device | str = "cpu", locations: pd.DataFrame | None = None) -> str:
    """A short hash of everything that determines the tiles: the preprocessing settings, the
    tile size, the kind of device that preprocesses (a GPU's resizing rounds differently from
    the CPU's), the fields and their roles, the image files (path, size, modification time),
    the cell locations given (their values, not their file) and the cache format. Two runs
    share a cache entry only if all of these agree."""
    h = hashlib.sha256(f"cellmorph-tile-cache-{CACHE_FORMAT}".encode())
    if locations is not None:
        h.update(pd.util.hash_pandas_object(locations, index=False).values.tobytes())
    h.update(cfg.model_dump_json().encode())
    h.update(str(tile_size).encode())
    h.update(torch.device(device).type.encode())
    paths = [sc.path_column(c) for c in sc.channels_of(index)]
    cols = sc.KEY_COLUMNS + [sc.ROLE] + paths
    h.update(pd.util.hash_pandas_object(index[cols], index=False).values.tobytes())
    for column in paths:
        h.update(np.array([_file_stamp(p) for p in index[column]], np.int64).tobytes())
    return h.hexdigest()[:16]


def image_stamps(index: pd.DataFrame) -> dict[str, str]:
    """Per plate, a short hash of its image files' paths, sizes and modification times.

    Size and modification time, not a content digest: reading every byte of a screen (tens of
    GB for BBBC021) at each run's start would cost minutes, and an image rewritten in place
    changes its modification time (as make and rsync assume). A copy that keeps both
    (``cp -p`` of another image of the same size) is not seen.
    """
    paths = [sc.path_column(c) for c in sc.channels_of(index)]
    stamps = {}
    for plate, rows in index.groupby(sc.PLATE, sort=True):
        h = hashlib.sha256()
        for column in paths:
            for path in rows[column]:
                size, mtime = _file_stamp(path)
                h.update(f"{path}\x1f{size}\x1f{mtime}\x1e".encode())
        stamps[str(plate)] = h.hexdigest()[:16]
    return stamps


def _file_stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def build_tile_cache(index: pd.DataFrame, cfg: PreprocessConfig, cache_root: Path | str, *,
                     tile_size: int, workers: int = 0, progress: bool = True,
                     device: torch.device | str = "cpu",
                     locations: pd.DataFrame | None = None) -> TileCache:
    """Preprocess every field of ``index`` into tiles (skipping plates already cached)."""
    ready = list(iter_tile_cache(index, cfg, cache_root, tile_size=tile_size, workers=workers,
                                 progress=progress, device=device, locations=locations))
    return ready[-1][0]


def iter_tile_cache(index: pd.DataFrame, cfg: PreprocessConfig, cache_root: Path | str, *,
                    tile_size: int, workers: int = 0, progress: bool = True,
                    device: torch.device | str = "cpu", locations: pd.DataFrame | None = None
                    ) -> Iterator[tuple[TileCache, str]]:
    """Yield ``(cache, plate)`` as each plate's tiles are ready, plates already cached first.

    With ``workers`` > 0, plates are decoded and preprocessed in that many worker processes
    while the caller works on the plates that are ready (inference overlapping with
    preprocessing); with 0, each plate is preprocessed here when the caller asks for it.
    Either way the tiles are the same. Fields are decoded on the CPU and preprocessed on
    ``device`` (a GPU takes the arithmetic off the CPU, which then only decodes). With
    ``tiles: cells``, ``locations`` (from
    :func:`cellmorph.datasets.cell_locations.read_cell_locations`) says where the nuclei
    are; without it they are found in the nuclear stain.
    """
    channels = sc.channels_of(index)
    index = index.reset_index(drop=True)
    device = str(torch.device(device))  # a name: worker processes get their own handle
    if cfg.tiles != "cells":
        locations = None
    check_cell_settings(cfg, channels, locations)
    folder = ensure_writable_dir(Path(cache_root).absolute()
                                 / cache_key(index, cfg, tile_size, device, locations))
    with folder_lock(folder, wait=True):  # two runs sharing a cache entry build it once
        remove_partial_files(folder)
        plates = tuple(sorted(index[sc.PLATE].unique()))
        write_text(json.dumps({"preprocess": cfg.model_dump(mode="json"),
                               "tile_size": tile_size, "channels": channels,
                               "preprocessed_on": torch.device(device).type,
                               "plates": list(plates)}, indent=2), folder / "settings.json")
        cache = TileCache(folder, plates, tuple(channels))
        todo = [p for p in plates if not (folder / f"{safe_name(p)}.parquet").is_file()]
        for plate in plates:
            if plate not in todo:
                yield cache, plate
        bar = progress_bar(total=len(todo), desc="preprocessing plates", unit="plate",
                           enabled=progress)
        if workers <= 0:
            for plate in todo:
                cache_plate(folder, index[index[sc.PLATE] == plate], channels, cfg, tile_size,
                            device=device, locations=_of_plate(locations, plate))
                bar.update()
                yield cache, plate
        else:
            context = multiprocessing.get_context("spawn")  # fork is unsafe with torch threads
            with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                     initializer=_single_thread) as pool:
                futures = [pool.submit(cache_plate, folder, index[index[sc.PLATE] == plate],
                                       channels, cfg, tile_size, threads=1, device=device,
                                       locations=_of_plate(locations, plate))
                           for plate in todo]
                for future in as_completed(futures):
                    plate = future.result()
                    bar.update()
                    yield cache, plate
        bar.close()


def check_cell_settings(cfg: PreprocessConfig, channels: Sequence[str],
                        locations: pd.DataFrame | None = None) -> None:
    """For ``tiles: cells`` without locations: the nuclear stain must be one of the index's."""
    if cfg.tiles == "cells" and locations is None:
        _nuclear_channel(cfg, list(channels))


def _nuclear_channel(cfg: PreprocessConfig, channels: list[str]) -> int:
    stain = sc.stain_named(channels, cfg.cells.nuclei_stain)
    if stain is None:
        raise CellmorphError(f"cells.nuclei_stain {cfg.cells.nuclei_stain!r} is not a stain of "
                             f"the index ({channels}); name the nuclear stain, or give "
                             "cells.locations")
    return channels.index(stain)


def _of_plate(locations: pd.DataFrame | None, plate: str) -> pd.DataFrame | None:
    if locations is None:
        return None
    return locations[locations[sc.PLATE] == str(plate)]


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def cache_plate(folder: Path, rows: pd.DataFrame, channels: list[str], cfg: PreprocessConfig,
                tile_size: int, *, threads: int = 0, device: torch.device | str = "cpu",
                locations: pd.DataFrame | None = None) -> str:
    """Preprocess one plate's fields into ``folder``; returns the plate's name."""
    plate = str(rows[sc.PLATE].iloc[0])
    try:
        tiles, table, stats = preprocess_plate(rows, channels, cfg, tile_size, threads=threads,
                                               device=device, locations=locations)
    except FieldMismatch:  # blame the files that differ from the plate's majority
        paths = [str(p) for ch in channels for p in rows[sc.path_column(ch)]]
        raise CellmorphError(f"plate {plate}: {odd_images(paths)}") from None
    write_npy(stats["illumination"], folder / f"{safe_name(plate)}.illum.npy")
    write_parquet(stats["quality"], folder / f"{safe_name(plate)}{QUALITY_SUFFIX}")
    write_npy(tiles, folder / f"{safe_name(plate)}.npy")
    # The table is written last: its presence marks the plate as done.
    write_parquet(table, folder / f"{safe_name(plate)}.parquet")
    return plate


def preprocess_plate(rows: pd.DataFrame, channels: list[str], cfg: PreprocessConfig,
                     tile_size: int, *, threads: int = 0, device: torch.device | str = "cpu",
                     locations: pd.DataFrame | None = None
                     ) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Tiles of one plate's fields: two passes, plate statistics first, then the tiles.

    Fields are decoded in ``threads`` threads (0: up to 4, one per core) and corrected,
    rescaled, tiled and resized on ``device``; the tiles are the same for every number of
    threads. The plate statistics (illumination functions, control statistics,
    percentiles) are computed on the CPU, so they do not depend on the device.
    """
    threads = threads or min(4, os.cpu_count() or 1)
    fields = [r for _, r in rows.iterrows()]
    first = read_field(fields[0], channels)  # fixes the dtype and shape the others must have
    reader = _FieldReader(fields, channels, first.dtype, first.shape[1:])
    seen = _first_pass(reader, first, threads)
    del first
    _check_tiling(cfg, reader.shape, rows)
    _warn_blank(rows, [fields[i] for i in sorted(seen.blank)], channels)
    stats = plate_statistics(seen, len(fields), reader.shape, channels, cfg,
                             plate=rows[sc.PLATE].iloc[0])
    seen.samples.clear()
    cells = _CellFinder(cfg, channels, fields, locations) if cfg.tiles == "cells" else None
    tiler = _FieldTiler(reader, seen.kept, cfg, tile_size, stats.on(torch.device(device)),
                        cells)
    # pass 2: tiles
    tiled = list(ordered_map(tiler, range(len(fields)), threads))
    table = _tile_table(tiled, rows, seen.blank, cfg)
    return np.concatenate([t.tiles for t in tiled]), table, {
        "illumination": stats.illumination, "control_mean": stats.mean,
        "control_std": stats.std, "quality": _quality_table(seen, rows, channels)}


@dataclass(frozen=True)
class _FieldReader:
    """Decodes field ``i`` of a plate with the dtype and shape of its first field."""

    fields: list[pd.Series]
    channels: list[str]
    dtype: np.dtype
    shape: tuple[int, ...]

    def __call__(self, i: int) -> np.ndarray:
        return read_field(self.fields[i], self.channels, dtype=self.dtype, shape=self.shape)


@dataclass
class _FirstPass:
    """What pass 1 over a plate gathers: illumination sums, a pixel sample per field for
    the plate statistics, the fields kept in memory for pass 2, the blank ones."""

    sums: np.ndarray | None = None
    samples: list[np.ndarray] = field(default_factory=list)
    is_control: list[bool] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    blank: set[int] = field(default_factory=set)  # a constant stain: left out of everything
    quality: list[np.ndarray] = field(default_factory=list)  # per field: (stains, measures)


def _first_pass(reader: _FieldReader, first: np.ndarray, threads: int) -> _FirstPass:
    """Pass 1: sums and samples of every non-blank field."""
    seen = _FirstPass()
    # Fields read in pass 1 are kept for pass 2 up to a memory budget: decoding is a fifth of
    # the preprocessing time, and a plate larger than the budget is read twice, not held.
    kept_bytes = 0

    def measured(i: int) -> tuple[np.ndarray, np.ndarray]:  # in the decoding threads
        img = first if i == 0 else reader(i)
        return img, field_quality(img)

    for i, (img, quality) in enumerate(ordered_map(measured, range(len(reader.fields)),
                                                   threads)):
        seen.quality.append(quality)
        if _has_constant_stain(img):
            seen.blank.add(i)
            continue
        if seen.sums is None:
            seen.sums = img.astype(np.float64)
        else:
            np.add(seen.sums, img, out=seen.sums)
        seen.samples.append(img[:, ::_STRIDE, ::_STRIDE].astype(np.float32))
        seen.is_control.append(reader.fields[i][sc.ROLE] == sc.ROLE_CONTROL)
        if kept_bytes + img.nbytes <= HELD_FIELDS_BYTES:
            seen.kept[i] = img
            kept_bytes += img.nbytes
    return seen


@dataclass(frozen=True)
class PlateStatistics:
    """A plate's constants: illumination functions, control mean and spread (after the
    transform), percentiles of the plate rescale; None where the settings skip them."""

    illumination: np.ndarray | torch.Tensor
    mean: np.ndarray | torch.Tensor | None = None
    std: np.ndarray | torch.Tensor | None = None
    low: np.ndarray | torch.Tensor | None = None
    high: np.ndarray | torch.Tensor | None = None

    def on(self, device: torch.device) -> PlateStatistics:
        """The same constants as float32 tensors on ``device``, moved once per plate."""
        return PlateStatistics(*(
            None if a is None else torch.as_tensor(np.asarray(a, np.float32), device=device)
            for a in (self.illumination, self.mean, self.std, self.low, self.high)))


def plate_statistics(seen: _FirstPass, n_fields: int, shape: tuple[int, ...],
                     channels: list[str], cfg: PreprocessConfig, *,
                     plate: str) -> PlateStatistics:
    """Illumination functions from the sums, then control statistics and percentiles from
    the transformed samples, as ``cfg`` asks."""
    n = n_fields - len(seen.blank)
    if cfg.illumination:
        illum = np.stack([illumination_function([seen.sums[c] / n],
                                                window=cfg.illumination_window)
                          for c in range(len(channels))])
    else:
        illum = np.ones((len(channels), *shape), np.float32)
    samples = [_transform(s, illum[:, ::_STRIDE, ::_STRIDE], cfg) for s in seen.samples]
    mean = std = low = high = None
    if cfg.control_normalise:
        controls = [s for s, c in zip(samples, seen.is_control, strict=True) if c]
        if not controls:
            raise CellmorphError(f"plate {plate}: no control (DMSO) fields to normalise "
                                 "against; add them or set control_normalise: false")
        mean, std = control_statistics(controls)
        samples = [normalise_to_controls(s, mean, std) for s in samples]
    if cfg.rescale == "plate":
        stacked = np.concatenate([s.reshape(len(channels), -1) for s in samples], axis=1)
        low, high = np.percentile(stacked, cfg.rescale_percentiles, axis=1)
    return PlateStatistics(illum, mean, std, low, high)


def _transform(img: Image, functions: Image, cfg: PreprocessConfig) -> Image:
    """Illumination correction and Anscombe, as configured."""
    x = correct_illumination(img, functions) if cfg.illumination else \
        like(as_tensor(img).to(torch.float32), img)
    return anscombe(x) if cfg.anscombe else x


@dataclass(frozen=True)
class _FieldTiles:
    """One field's tiles, and for cell crops which nucleus each is (else None)."""

    tiles: np.ndarray
    cells: pd.DataFrame | None = None


@dataclass
class _CellFinder:
    """Where the nuclei of field ``i`` are: found in its nuclear stain, or read from the
    locations table. Centres are (y, x) in the field's own pixels."""

    cfg: PreprocessConfig
    channels: list[str]
    fields: list[pd.Series]
    locations: pd.DataFrame | None

    def __post_init__(self) -> None:
        self._given = None
        if self.locations is not None:
            self._given = {key: part for key, part in
                           self.locations.groupby([sc.WELL, sc.SITE], sort=False)}
        else:
            self._nuclear = _nuclear_channel(self.cfg, self.channels)

    def __call__(self, i: int, raw: np.ndarray) -> pd.DataFrame:
        """Object numbers and centres (``Location_Center_X/Y``) of field ``i``."""
        field = self.fields[i]
        if self._given is None:
            c = self.cfg.cells
            return find_nuclei(raw[self._nuclear], NucleusSettings(
                c.smooth, c.min_area, c.max_area, c.split_distance))
        empty = pd.DataFrame(columns=[sc.OBJECT_NUMBER, sc.CP_CENTER_X, sc.CP_CENTER_Y])
        found = self._given.get((field[sc.WELL], int(field[sc.SITE])), empty)
        h, w = raw.shape[1:]
        outside = (found[sc.CP_CENTER_X] >= w) | (found[sc.CP_CENTER_Y] >= h)
        if outside.any():
            cell = found[outside].iloc[0]
            raise CellmorphError(
                f"cell locations: plate {field[sc.PLATE]} well {field[sc.WELL]} site "
                f"{field[sc.SITE]} object {cell[sc.OBJECT_NUMBER]} is at x={cell[sc.CP_CENTER_X]}"
                f", y={cell[sc.CP_CENTER_Y]}, outside the {w}x{h} field; are the locations "
                "from these images (and X the column)?")
        return found


@dataclass
class _FieldTiler:
    """Pass 2 for field ``i`` (run in the thread pool): corrected, rescaled to 8 bits and
    cut into tiles of ``tile_size``. Random crops draw from the field's own generator (the
    seed and the field's position), so they do not depend on the threads' order; so do the
    cells kept when a field has more than the cap."""

    reader: _FieldReader
    kept: dict[int, np.ndarray]  # fields still in memory from pass 1 (popped when used)
    cfg: PreprocessConfig
    tile_size: int
    stats: PlateStatistics  # on the device
    cells: _CellFinder | None = None

    def __call__(self, i: int) -> _FieldTiles:
        cfg, stats = self.cfg, self.stats
        raw = self.kept.pop(i, None)
        raw = self.reader(i) if raw is None else raw
        device = stats.illumination.device
        x = _transform(to_device(raw, device), stats.illumination, cfg)
        if stats.mean is not None:
            x = normalise_to_controls(x, stats.mean, stats.std)
        img8 = rescale_to_uint8(x, per_channel=False) if cfg.rescale == "image" else \
            rescale_to_uint8(x, low=stats.low, high=stats.high)
        if cfg.resize is not None:
            img8 = resize_stack(img8, tuple(cfg.resize))
        cells = None
        if cfg.tiles == "grid":
            tiles = grid_tiles(img8, *cfg.grid)
        elif cfg.tiles == "random":
            tiles = random_tiles(img8, cfg.random_count, tuple(cfg.random_size),
                                 np.random.default_rng([cfg.seed, i]))
        else:
            tiles, cells = self._cell_crops(i, raw, img8)
        return _FieldTiles(resize_stack(tiles, (self.tile_size, self.tile_size)).cpu().numpy(),
                           cells)

    def _cell_crops(self, i: int, raw: np.ndarray, img8: Image) -> tuple[Image, pd.DataFrame]:
        """One crop per chosen nucleus, and the table of which nucleus each crop is."""
        c = self.cfg.cells
        found = self.cells(i, raw)
        # Centres in the (resized) field's pixels: pixel centres map onto pixel centres.
        scale = np.asarray(img8.shape[1:], float) / np.asarray(raw.shape[1:], float)
        centres = (found[[sc.CP_CENTER_Y, sc.CP_CENTER_X]].to_numpy(float) + 0.5) * scale - 0.5
        chosen = choose_cells(centres, tuple(img8.shape[1:]), c.size, edge=c.edge,
                              max_cells=c.max_per_field,
                              rng=np.random.default_rng([self.cfg.seed, i]))
        crops = cell_crops(img8, centres[chosen], c.size,
                           neighbours=centres if c.mask_neighbours else None)
        table = pd.DataFrame({
            sc.OBJECT_NUMBER: found[sc.OBJECT_NUMBER].to_numpy()[chosen].astype(np.int64),
            sc.CELL_X: found[sc.CP_CENTER_X].to_numpy(float)[chosen],
            sc.CELL_Y: found[sc.CP_CENTER_Y].to_numpy(float)[chosen],
            sc.CELL_COUNT: len(found)})
        return crops, table


def _quality_table(seen: _FirstPass, rows: pd.DataFrame, channels: list[str]) -> pd.DataFrame:
    """One row per field: its metadata, whether a stain was blank, and each stain's image
    quality (:mod:`cellmorph.preprocess.quality`)."""
    meta = rows[[c for c in rows.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    values = np.stack(seen.quality).reshape(len(seen.quality), -1)
    names = [f"{QC_PREFIX}{stain}_{m}" for stain in channels for m in QUALITY_MEASURES]
    return pd.concat([meta.assign(**{ROW: rows.index.to_numpy(np.int64),
                                     BLANK: [i in seen.blank for i in range(len(meta))]}),
                      pd.DataFrame(values, columns=names)], axis=1)


def _tile_table(tiled: list[_FieldTiles], rows: pd.DataFrame, blank: set[int],
                cfg: PreprocessConfig) -> pd.DataFrame:
    """Which index row and tile position each tile is, whether it is kept, its metadata (and
    for cell crops its nucleus: object number, centre, the field's cell count)."""
    parts, cells = [], []
    for i, field_tiles in enumerate(tiled):
        t = field_tiles.tiles
        keep = nonempty_tiles(t, threshold=cfg.empty_threshold,
                              min_fraction=cfg.empty_min_fraction) if cfg.drop_empty else \
            np.ones(len(t), bool)
        keep &= i not in blank
        parts.append(pd.DataFrame({ROW: np.full(len(t), int(rows.index[i]), np.int64),
                                   TILE: np.arange(len(t), dtype=np.int64), KEEP: keep}))
        if field_tiles.cells is not None:
            cells.append(field_tiles.cells)
    meta = rows[[c for c in rows.columns if c.startswith("Metadata_")]]
    table = pd.concat(parts, ignore_index=True).join(meta, on=ROW)
    if cells:  # the nucleus of each crop, after the field's metadata
        table = pd.concat([table, pd.concat(cells, ignore_index=True)], axis=1)
    return table


def _has_constant_stain(img: np.ndarray) -> bool:
    """True when a stain of a field is one value everywhere (a failed acquisition, an all-zero
    export): it carries no cells, and in the plate's statistics it would shift every other
    field's correction."""
    # The plate-statistics sample (2 % of the pixels) settles almost every field; the whole
    # field is read only where that sample is constant.
    sample = img[:, ::_STRIDE, ::_STRIDE].reshape(len(img), -1)
    flat_sample = sample.min(axis=1) == sample.max(axis=1)
    if not flat_sample.any():
        return False
    flat = img[flat_sample].reshape(int(flat_sample.sum()), -1)
    return bool((flat.min(axis=1) == flat.max(axis=1)).any())


def _warn_blank(rows: pd.DataFrame, blank: list[pd.Series], channels: list[str]) -> None:
    if blank:
        where = ", ".join(f"{f[sc.WELL]} site {f[sc.SITE]}" for f in blank[:3])
        log.warning("plate %s: %d field(s) have a stain that is one value everywhere (%s%s; "
                    "first file %s); they are left out", rows[sc.PLATE].iloc[0], len(blank),
                    where, ", ..." if len(blank) > 3 else "",
                    blank[0][sc.path_column(channels[0])])
    if len(blank) == len(rows):
        raise CellmorphError(f"plate {rows[sc.PLATE].iloc[0]}: every field has a stain that is "
                             "one value everywhere; check the images")


def ordered_map(fn: Callable[[int], np.ndarray], items: Iterable[int],
                threads: int) -> Iterator[np.ndarray]:
    """``map(fn, items)`` on a thread pool, in order, with at most ``2 * threads`` in flight.

    Written here because ``Executor.map`` submits every item at once and holds all results:
    a whole plate of decoded fields in memory. NumPy, tifffile and torch release the GIL, so
    the threads decode and correct fields on every core.
    """
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_tiling(cfg: PreprocessConfig, shape: tuple[int, int], rows: pd.DataFrame) -> None:
    h, w = cfg.resize if cfg.resize is not None else shape
    where = f"plate {rows[sc.PLATE].iloc[0]} ({shape[0]}x{shape[1]} images)"
    if cfg.tiles == "random" and (cfg.random_size[0] > h or cfg.random_size[1] > w):
        raise CellmorphError(f"{where}: crop size {tuple(cfg.random_size)} is larger than the "
                             f"image ({h}x{w}); choose a smaller random_size")
    if cfg.tiles == "cells" and (cfg.cells.size > h or cfg.cells.size > w):
        raise CellmorphError(f"{where}: cell crops of {cfg.cells.size} pixels are larger than "
                             "the field; choose a smaller cells.size")
    if cfg.tiles == "grid" and (h // cfg.grid[0] < 8 or w // cfg.grid[1] < 8):
        raise CellmorphError(f"{where}: a {cfg.grid[0]}x{cfg.grid[1]} grid gives crops smaller "
                             "than 8 pixels; use fewer tiles")


def safe_name(plate: str) -> str:
    """A plate name usable as a file name on every platform."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in plate)
