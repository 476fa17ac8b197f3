"""Single-cell crops: a square centred on each nucleus (DeepProfiler's way of seeing a field).

Centres are (y, x) pixel coordinates as floats; a crop of side ``size`` centred on (y, x)
starts at ``floor(y + 0.5) - size // 2`` (the same for every caller, so the same centres
give the same crops whether a detector or a CellProfiler table found them).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cellmorph.preprocess.arrays import Image, as_tensor, like


def crop_origins(centres: np.ndarray, size: int) -> np.ndarray:
    """Top-left corner (row, column) of each centre's crop, integers (n, 2)."""
    return np.floor(np.asarray(centres, float).reshape(-1, 2) + 0.5).astype(np.int64) - size // 2


def choose_cells(centres: np.ndarray, shape: tuple[int, int], size: int, *,
                 edge: str = "skip", max_cells: int | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Which centres get a crop (indices, ascending): with ``edge="skip"`` those whose crop
    lies inside the field, then at most ``max_cells`` of them drawn with ``rng``.

    >>> choose_cells(np.array([[2.0, 2.0], [20.0, 20.0]]), (40, 40), 8)
    array([1])
    """
    origins = crop_origins(centres, size)
    h, w = shape
    inside = (origins[:, 0] >= 0) & (origins[:, 1] >= 0) & (origins[:, 0] + size <= h) \
        & (origins[:, 1] + size <= w)
    chosen = np.flatnonzero(inside) if edge == "skip" else np.arange(len(origins))
    if max_cells is not None and len(chosen) > max_cells:
        rng = rng if rng is not None else np.random.default_rng(0)
        chosen = np.sort(rng.choice(chosen, max_cells, replace=False))
    return chosen


def cell_crops(image: Image, centres: np.ndarray, size: int, *,
               neighbours: np.ndarray | None = None) -> Image:
    """Crops (n, C, size, size) of a (C, H, W) image centred on ``centres``; what lies
    outside the field is zero. With ``neighbours`` (every centre of the field), pixels
    nearer another centre than the crop's own are zeroed too (neighbouring cells masked).

    >>> img = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(2, 6, 6)
    >>> cell_crops(img, np.array([[2.0, 3.0]]), 2)[0, 0]
    array([[ 8,  9],
           [14, 15]], dtype=uint8)
    """
    x = as_tensor(image)
    origins = crop_origins(centres, size)
    pad = size  # a crop can reach at most size - 1 pixels past an edge when its centre is inside
    padded = F.pad(x, (pad, pad, pad, pad))
    crops = torch.stack([padded[:, y + pad: y + pad + size, x0 + pad: x0 + pad + size]
                         for y, x0 in origins.tolist()]) if len(origins) else \
        x.new_zeros((0, x.shape[0], size, size))
    if neighbours is not None and len(origins):
        own = np.asarray(centres, float).reshape(-1, 2)
        masks = np.stack([_own_territory(o, c, np.asarray(neighbours, float), size)
                          for o, c in zip(origins, own, strict=True)])
        crops = crops * torch.as_tensor(masks, device=crops.device)[:, None].to(crops.dtype)
    return like(crops.contiguous(), image)


def _own_territory(origin: np.ndarray, centre: np.ndarray, centres: np.ndarray,
                   size: int) -> np.ndarray:
    """(size, size) mask of the crop's pixels at least as near its own centre as any other
    (a Voronoi cell: without a cell outline it is the fairest boundary to draw)."""
    yy, xx = np.mgrid[0:size, 0:size]
    yy, xx = yy + origin[0], xx + origin[1]
    reach = np.abs(centres - centre).max(axis=1) <= 2 * size
    near = centres[reach]
    d_other = np.full(yy.shape, np.inf)
    d_own = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    for cy, cx in near:
        if cy == centre[0] and cx == centre[1]:
            continue
        np.minimum(d_other, (yy - cy) ** 2 + (xx - cx) ** 2, out=d_other)
    return d_own <= d_other
