"""Procedural rendering of fluorescent cells (nuclei, microtubules, actin, a translocating signal).

No library renders cell-painting-like fields with controllable phenotypes, so this is written
by hand. Each cell is drawn in a local patch from a handful of shape parameters; a
:class:`Phenotype` sets those parameters, and a treatment moves them away from the control
phenotype with a strength in [0, 1]. Plates add intensity gain, background and vignetting, so
that raw intensity alone does not identify a treatment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellmorph.errors import CellmorphError


@dataclasses.dataclass(frozen=True)
class Phenotype:
    """Per-cell shape and texture parameters (multipliers and fractions, control = defaults)."""

    density: float = 1.0  # relative cell count (toxicity lowers it)
    nucleus_size: float = 1.0
    nucleus_elongation: float = 1.15
    cell_size: float = 1.0
    cell_elongation: float = 1.3
    mitotic_fraction: float = 0.03  # round, condensed, bright DNA
    fragmented_fraction: float = 0.0  # nucleus broken into blobs
    multinucleate_fraction: float = 0.0
    fiber_strength: float = 0.6  # microtubule filaments vs diffuse tubulin
    fiber_thickness: float = 1.0
    tubulin_level: float = 1.0
    aster_fraction: float = 0.0  # monopolar spindles (bright tubulin ring)
    actin_ring: float = 0.7  # cortical actin
    stress_fibers: float = 0.3
    actin_puncta: float = 0.0  # aggregates after actin disruption
    nuclear_texture: float = 0.2
    nuclear_signal: float = 0.15  # fraction of the translocating signal inside the nucleus

    def toward(self, other: Phenotype, strength: float) -> Phenotype:
        """Interpolate every parameter from ``self`` toward ``other`` by ``strength``."""
        values = {
            f.name: getattr(self, f.name) + strength * (getattr(other, f.name) - getattr(self, f.name))
            for f in dataclasses.fields(self)
        }
        return Phenotype(**values)

    def jittered(self, rng: np.random.Generator, scale: float) -> Phenotype:
        """A nearby phenotype: each parameter moved by up to ``scale`` of itself."""
        values = {f.name: max(0.0, getattr(self, f.name) * (1 + rng.uniform(-scale, scale)))
                  for f in dataclasses.fields(self)}
        return Phenotype(**values)


@dataclasses.dataclass(frozen=True)
class PlateEffect:
    """Per-plate acquisition differences: gain and background per channel, and vignetting."""

    gain: dict[str, float]
    background: dict[str, float]
    vignetting: float  # 0 = flat; 0.4 = 40 % darker corners
    centre: tuple[float, float] = (0.5, 0.5)

    @staticmethod
    def random(channels: Sequence[str], rng: np.random.Generator) -> PlateEffect:
        """Draw a plate effect from ranges seen in real screens."""
        return PlateEffect(
            gain={c: float(rng.uniform(0.6, 1.5)) for c in channels},
            background={c: float(rng.uniform(0.02, 0.08)) for c in channels},
            vignetting=float(rng.uniform(0.15, 0.45)),
            centre=(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.4, 0.6))),
        )


MAX_PIXELS = 4096 * 4096  # a synthetic field; drawing larger ones exhausts memory


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """A synthetic field's (height, width), refused when it cannot be drawn."""
    h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise CellmorphError(f"size {h}x{w}: synthetic fields must be at least 32x32")
    if h * w > MAX_PIXELS:
        raise CellmorphError(f"size {h}x{w}: at most {MAX_PIXELS:,} pixels a synthetic field "
                             "(4096x4096); the real BBBC021 fields are 1024x1280")
    return h, w


def render_field(phenotype: Phenotype, shape: tuple[int, int], rng: np.random.Generator,
                 **options: Any) -> dict[str, np.ndarray]:
    """Render one field of view; returns float32 images in [0, ~1] keyed by channel (the
    images of :func:`render_field_with_cells`, which takes the same ``options``).

    Channels understood: ``DAPI`` (DNA), ``Tubulin``, ``Actin`` and ``FITC`` (a signal that
    moves from cytoplasm to nucleus with ``Phenotype.nuclear_signal``).
    """
    return render_field_with_cells(phenotype, shape, rng, **options)[0]


def render_field_with_cells(
    phenotype: Phenotype,
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    channels: Sequence[str] = ("DAPI", "Tubulin", "Actin"),
    plate: PlateEffect | None = None,
    nucleus_radius: float | None = None,
    cells_per_megapixel: float = 90.0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`render_field` (the same images from the same ``rng``), and where each cell
    was drawn: (n, 2) centres (y, x) in pixels, the ground truth of nucleus detection."""
    h, w = shape
    rn0 = nucleus_radius if nucleus_radius is not None else max(6.0, w / 60.0)
    # Cells per field: scale with area in units of the nucleus, so small fields are not empty.
    area_cells = (h * w) / (np.pi * (2.6 * rn0) ** 2)
    expected = max(3.0, 0.45 * area_cells * phenotype.density * min(1.0, cells_per_megapixel / 90))
    n_cells = int(rng.poisson(expected))
    planes = {c: np.zeros((h, w), np.float32) for c in channels}
    centres = [_draw_cell(planes, phenotype, rn0, rng, (h, w)) for _ in range(n_cells)]
    out = {}
    plate = plate or PlateEffect({c: 1.0 for c in channels}, {c: 0.04 for c in channels}, 0.2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy / h - plate.centre[0]) ** 2 + (xx / w - plate.centre[1]) ** 2) / 0.5
    illum = 1.0 - plate.vignetting * r2
    for c, img in planes.items():
        img = (img * plate.gain[c] + plate.background[c]) * illum
        img = img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)
        out[c] = np.clip(img, 0.0, None).astype(np.float32)
    drawn = [c for c in centres if c is not None]
    return out, np.asarray(drawn, dtype=float).reshape(len(drawn), 2)


@dataclass(frozen=True)
class _Cell:
    """One drawn cell's geometry, in its bounding box at ``(y0, x0)``: offsets from the
    centre (``dy``, ``dx``), coordinates along and across its long axis (``u``, ``v``), the
    normalised radius and angle, and the soft cell mask."""

    mitotic: bool
    fragmented: bool
    multinucleate: bool
    aster: bool
    rn: float  # nucleus radius
    rc: float  # cell radius
    elong_n: float
    corner: tuple[int, int]
    dy: np.ndarray
    dx: np.ndarray
    u: np.ndarray
    v: np.ndarray
    r_cell: np.ndarray
    phi: np.ndarray
    mask: np.ndarray
    centre: tuple[float, float]  # (y, x) in the field


def _draw_cell(planes: dict[str, np.ndarray], p: Phenotype, rn0: float,
               rng: np.random.Generator, shape: tuple[int, int]) -> tuple[float, float] | None:
    """Draw one cell; returns its centre (y, x), or None when none was drawn."""
    # The random draws happen in a fixed order (shape, nucleus, then each stain): the same
    # seed draws the same cells.
    cell = _cell_shape(p, rn0, rng, shape)
    if cell is None:
        return None
    nucleus = _nucleus(cell, rng)
    if "DAPI" in planes:
        texture = 1.0 + p.nuclear_texture * rng.normal(0, 1, nucleus.shape).astype(np.float32)
        level = (1.8 if cell.mitotic else 0.8) * rng.uniform(0.85, 1.15)
        _add(planes["DAPI"], cell.corner, nucleus * level * np.clip(texture, 0.3, None))
    if "Tubulin" in planes:
        _add(planes["Tubulin"], cell.corner, _tubulin(cell, p, rng))
    if "Actin" in planes:
        _add(planes["Actin"], cell.corner, _actin(cell, p, rng))
    if "FITC" in planes:
        cyto = np.clip(cell.mask - nucleus, 0, 1)
        f = p.nuclear_signal
        sig = (1 - f) * cyto * 0.5 + f * nucleus * 1.6
        _add(planes["FITC"], cell.corner, sig * rng.uniform(0.8, 1.2))
    return cell.centre


def _cell_shape(p: Phenotype, rn0: float, rng: np.random.Generator,
                shape: tuple[int, int]) -> _Cell | None:
    """Where the cell is, its state (mitotic, fragmented ...), size and outline; None when
    its box falls outside the field."""
    h, w = shape
    mitotic = rng.random() < p.mitotic_fraction
    fragmented = (not mitotic) and rng.random() < p.fragmented_fraction
    multinuc = (not mitotic) and (not fragmented) and rng.random() < p.multinucleate_fraction
    aster = rng.random() < p.aster_fraction
    rn = rn0 * p.nucleus_size * rng.uniform(0.85, 1.15) * (0.7 if mitotic else 1.0)
    rc = rn0 * 2.3 * p.cell_size * rng.uniform(0.85, 1.15) * (0.75 if mitotic else 1.0)
    elong_c = 1.0 if mitotic else p.cell_elongation * rng.uniform(0.9, 1.1)
    elong_n = 1.0 if mitotic else p.nucleus_elongation
    theta = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    half = int(np.ceil(rc * max(elong_c, 1.0) * 1.3)) + 2
    y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half + 1)
    x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)  # along the long axis
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    r_cell = np.sqrt((u / (rc * np.sqrt(elong_c))) ** 2 + (v * np.sqrt(elong_c) / rc) ** 2)
    return _Cell(mitotic, fragmented, multinuc, aster, rn, rc, elong_n, (y0, x0), dy, dx, u, v,
                 r_cell, np.arctan2(v, u), _soft(r_cell, 1.0, 0.08), (cy, cx))


def _nucleus(cell: _Cell, rng: np.random.Generator) -> np.ndarray:
    """The nucleus (or nuclei, or fragments): the DNA stain and the translocation's mask."""
    nucleus = np.zeros_like(cell.mask)
    rn = cell.rn
    if cell.fragmented:
        for _ in range(int(rng.integers(3, 7))):
            oy, ox = rng.normal(0, rn * 0.6, 2)
            r = np.sqrt((cell.dy - oy) ** 2 + (cell.dx - ox) ** 2) / (rn * rng.uniform(0.25, 0.4))
            nucleus = np.maximum(nucleus, _soft(r, 1.0, 0.15))
        return nucleus
    centres = [(0.0, 0.0)]
    if cell.multinucleate:
        k = int(rng.integers(2, 4))
        centres = [(rn * 0.9 * np.cos(a), rn * 0.9 * np.sin(a))
                   for a in np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, 6)]
    for ou, ov in centres:
        r = np.sqrt(((cell.u - ou) / (rn * np.sqrt(cell.elong_n))) ** 2
                    + ((cell.v - ov) * np.sqrt(cell.elong_n) / rn) ** 2)
        nucleus = np.maximum(nucleus, _soft(r, 1.0, 0.1))
    return nucleus


def _tubulin(cell: _Cell, p: Phenotype, rng: np.random.Generator) -> np.ndarray:
    """Microtubule fibres radiating from the centre; a ring for asters and mitoses."""
    n_fib = int(rng.integers(9, 16))
    fib = (0.5 + 0.5 * np.cos(n_fib * cell.phi + rng.uniform(0, 6.3))) ** (6.0 / p.fiber_thickness)
    radial = np.clip(cell.r_cell, 0, 1)
    tub = cell.mask * p.tubulin_level * (0.35 + p.fiber_strength * fib * (0.4 + radial))
    if cell.aster or cell.mitotic:
        ring = np.exp(-((cell.r_cell - 0.35) / 0.12) ** 2)
        tub = tub + (1.2 if cell.aster else 0.6) * ring * cell.mask
    return 0.6 * tub * rng.uniform(0.85, 1.15)


def _actin(cell: _Cell, p: Phenotype, rng: np.random.Generator) -> np.ndarray:
    """A cortical ring, stress fibres along the long axis, puncta where the phenotype has
    them."""
    ring = np.exp(-((cell.r_cell - 0.92) / 0.1) ** 2) * p.actin_ring
    k = rng.uniform(0.9, 1.4)
    fibres = (0.5 + 0.5 * np.cos(k * cell.v + rng.uniform(0, 6.3))) ** 8 * p.stress_fibers \
        * cell.mask
    act = 0.2 * cell.mask + ring + fibres
    if p.actin_puncta > 0:
        for _ in range(int(rng.poisson(6 * p.actin_puncta))):
            oy, ox = rng.normal(0, cell.rc * 0.5, 2)
            r = np.sqrt((cell.dy - oy) ** 2 + (cell.dx - ox) ** 2) / (cell.rn * 0.22)
            act = act + 1.5 * _soft(r, 1.0, 0.2) * cell.mask
    return 0.6 * act * rng.uniform(0.85, 1.15)


def _soft(r: np.ndarray, edge: float, width: float) -> np.ndarray:
    """A smooth disc: 1 inside ``edge``, 0 outside, logistic edge of ``width``."""
    return (1.0 / (1.0 + np.exp(np.clip((r - edge) / width, -30, 30)))).astype(np.float32)


def _add(plane: np.ndarray, origin: tuple[int, int], patch: np.ndarray) -> None:
    y0, x0 = origin
    plane[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] += patch


def to_uint(img: np.ndarray, dtype: type = np.uint16, scale: float | None = None) -> np.ndarray:
    """Scale a float image (about 0..1) to an unsigned integer image with headroom."""
    info = np.iinfo(dtype)
    scale = scale if scale is not None else info.max / 4.0
    return np.clip(np.round(img * scale), 0, info.max).astype(dtype)
