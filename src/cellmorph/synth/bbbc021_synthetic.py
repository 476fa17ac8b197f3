"""Synthetic BBBC021 plates: the real file names and plate layout, procedurally drawn cells.

Every MoA moves the control phenotype in its own direction (see ``MOA_PHENOTYPES``);
compounds of one MoA differ a little; the effect grows with concentration; plates differ in
gain, background and vignetting. Everything written is marked as synthetic.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from cellmorph import schema as sc
from cellmorph.atomic import atomic_path, ensure_writable_dir, write_csv, write_text
from cellmorph.datasets import bbbc021 as b21
from cellmorph.errors import CellmorphError
from cellmorph.log import progress as progress_bar
from cellmorph.synth.render import Phenotype, PlateEffect, check_size, render_field, to_uint

CONTROL = Phenotype()
MOA_PHENOTYPES: dict[str, Phenotype] = {
    "Actin disruptors": Phenotype(actin_ring=0.05, stress_fibers=0.0, actin_puncta=1.2,
                                  cell_size=0.8, cell_elongation=1.0),
    "Aurora kinase inhibitors": Phenotype(multinucleate_fraction=0.55, nucleus_size=1.45,
                                          cell_size=1.4),
    "Cholesterol-lowering": Phenotype(cell_elongation=2.1, cell_size=0.9, stress_fibers=0.0,
                                      actin_ring=1.1),
    "DNA damage": Phenotype(nucleus_size=1.45, nuclear_texture=0.7, fragmented_fraction=0.15,
                            cell_size=1.3, density=0.8),
    "DNA replication": Phenotype(nucleus_size=1.25, density=0.65, nuclear_texture=0.5,
                                 cell_size=1.2, nucleus_elongation=1.0),
    "Eg5 inhibitors": Phenotype(mitotic_fraction=0.6, aster_fraction=0.55),
    "Epithelial": Phenotype(cell_elongation=1.0, stress_fibers=0.9, actin_ring=1.4, density=1.35,
                            cell_size=0.85),
    "Kinase inhibitors": Phenotype(cell_size=1.35, stress_fibers=1.0, cell_elongation=1.8),
    "Microtubule destabilizers": Phenotype(fiber_strength=0.0, mitotic_fraction=0.45,
                                           tubulin_level=0.7),
    "Microtubule stabilizers": Phenotype(fiber_strength=1.7, fiber_thickness=2.6,
                                         mitotic_fraction=0.35, tubulin_level=1.5),
    "Protein degradation": Phenotype(fragmented_fraction=0.35, nucleus_size=0.85, density=0.75,
                                     nuclear_texture=0.45),
    "Protein synthesis": Phenotype(cell_size=0.7, nucleus_size=0.85, density=0.6,
                                   tubulin_level=0.8, actin_ring=0.4),
}
DEFAULT_MOAS = ("Actin disruptors", "Microtubule stabilizers", "Protein synthesis", "DNA damage")
SYNTHETIC_NOTE = (
    "SYNTHETIC DATA made by `cellmorph synth`: procedurally drawn cells in the BBBC021 layout.\n"
    "These are not microscopy images; numbers measured on them say nothing about real biology.\n"
)


def stable_seed(*parts: object) -> int:
    """A seed from strings that is the same in every process (``hash()`` is salted)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def select(
    image_meta: pd.DataFrame,
    moa_meta: pd.DataFrame,
    *,
    moas: Sequence[str] | str | None = DEFAULT_MOAS,
    compounds: Sequence[str] | None = None,
    plates: Sequence[str] | None = None,
    sites: int = 1,
    max_concentrations: int | None = 2,
    controls_per_plate: int | None = 4,
) -> pd.DataFrame:
    """Rows of the official image table to synthesise: chosen treatments plus DMSO wells.

    Treatments follow the MoA benchmark rules; ``max_concentrations`` keeps the highest
    concentrations of each compound; DMSO wells come from the same plates.
    """
    pm = b21.platemap(image_meta, moa_meta, moa_subset=True)
    keep = pm[sc.ROLE] == sc.ROLE_TREATMENT
    if moas:
        unknown = sorted(set(moas) - set(MOA_PHENOTYPES))
        if unknown:
            raise CellmorphError(f"synth: unknown MoA(s) {unknown}; "
                                 f"choose from {sorted(MOA_PHENOTYPES)}")
        keep &= pm[sc.MOA].isin(list(moas))
    if compounds:
        unknown = sorted(set(compounds) - set(pm.loc[keep, sc.COMPOUND]))
        if unknown:
            raise CellmorphError(f"synth: compound(s) {unknown} are not labelled treatments of "
                                 "the chosen MoAs")
        keep &= pm[sc.COMPOUND].isin(list(compounds))
    if plates:
        keep &= pm[sc.PLATE].isin(list(plates))
    if max_concentrations:
        conc_rank = pm[keep].groupby(sc.COMPOUND)[sc.CONCENTRATION].rank(method="dense",
                                                                            ascending=False)
        keep &= pm.index.isin(conc_rank[conc_rank <= max_concentrations].index)
    keep &= pm[sc.SITE] <= sites
    if not keep.any():
        raise CellmorphError("synth: the selection is empty; widen --moa/--compound/--plate")
    treated = pm[keep]
    ctl = pm[(pm[sc.ROLE] == sc.ROLE_CONTROL) & pm[sc.PLATE].isin(set(treated[sc.PLATE]))
             & (pm[sc.SITE] <= sites)]
    if controls_per_plate:
        wells = ctl[[sc.PLATE, sc.WELL]].drop_duplicates()
        wells = wells.groupby(sc.PLATE, sort=False).head(controls_per_plate)
        ctl = ctl.merge(wells, on=[sc.PLATE, sc.WELL])
    # ImageNumber restarts in every TableNumber; the DAPI file name is unique.
    chosen = set(pd.concat([treated, ctl])[sc.path_column("DAPI")].str.rsplit("/", n=1).str[-1])
    return image_meta[image_meta["Image_FileName_DAPI"].isin(chosen)].reset_index(drop=True)


def synthesize_bbbc021(
    out: Path | str,
    *,
    moas: Sequence[str] | None = DEFAULT_MOAS,
    compounds: Sequence[str] | None = None,
    plates: Sequence[str] | None = None,
    sites: int = 1,
    max_concentrations: int | None = 2,
    controls_per_plate: int | None = 4,
    size: tuple[int, int] = (128, 160),
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Write synthetic BBBC021 plate folders under ``out``; returns the image table written.

    ``moas``: the MoAs drawn (``"all"``: the 12); ``size`` is (height, width), the real
    images are (1024, 1280).

    Examples
    --------
    >>> table = synthesize_bbbc021(tmp / "synthetic", moas=["Actin disruptors",
    ...                            "Protein synthesis"], max_concentrations=1,
    ...                            controls_per_plate=1, size=(64, 80), progress=False)
    >>> len(table), sorted(p.name for p in (tmp / "synthetic").iterdir())[:2]
    (36, ['BBBC021_v1_image.csv', 'BBBC021_v1_moa.csv'])
    """
    size = check_size(size)
    moas = sorted(MOA_PHENOTYPES) if moas == "all" else moas
    image_meta = b21.read_image_metadata()
    moa_meta = b21.read_moa_metadata()
    rows = select(image_meta, moa_meta, moas=moas, compounds=compounds, plates=plates, sites=sites,
                  max_concentrations=max_concentrations, controls_per_plate=controls_per_plate)
    out = ensure_writable_dir(Path(out))  # only once the selection is known to be good
    moa_of = {(c, round(float(x), 6)): m for c, x, m in
              zip(moa_meta["compound"], moa_meta["concentration"], moa_meta["moa"], strict=True)}
    conc_rank = _concentration_strength(moa_meta)
    plate_effects: dict[str, PlateEffect] = {}
    for row in progress_bar(rows.itertuples(index=False), total=len(rows), desc="synthesising BBBC021",
                    enabled=progress, unit="field"):
        plate = row.Image_Metadata_Plate_DAPI
        if plate not in plate_effects:
            plate_effects[plate] = PlateEffect.random(b21.CHANNELS, np.random.default_rng(
                stable_seed(seed, "plate", plate)))
        compound, conc = row.Image_Metadata_Compound, float(row.Image_Metadata_Concentration)
        phenotype = treatment_phenotype(compound, moa_of.get((compound, round(conc, 6))),
                                        conc_rank.get((compound, round(conc, 6)), 1.0), seed)
        rng = np.random.default_rng(stable_seed(seed, plate, row.Image_FileName_DAPI))
        planes = render_field(phenotype, size, rng, channels=b21.CHANNELS, plate=plate_effects[plate])
        for ch in b21.CHANNELS:
            folder = out / getattr(row, f"Image_PathName_{ch}")
            folder.mkdir(parents=True, exist_ok=True)
            _write_tiff(folder / getattr(row, f"Image_FileName_{ch}"), to_uint(planes[ch]))
    write_csv(rows, out / "BBBC021_v1_image.csv")
    write_csv(moa_meta, out / "BBBC021_v1_moa.csv")
    write_text(SYNTHETIC_NOTE + f"seed={seed} size={size[0]}x{size[1]} fields={len(rows)}\n",
               out / "SYNTHETIC.txt")
    return rows


def treatment_phenotype(compound: str, moa: str | None, strength: float, seed: int) -> Phenotype:
    """The phenotype of a compound at a concentration (``strength`` in [0, 1])."""
    if moa is None or moa not in MOA_PHENOTYPES:
        return CONTROL
    rng = np.random.default_rng(stable_seed(seed, "compound", compound))
    target = MOA_PHENOTYPES[moa].jittered(rng, 0.12)
    return CONTROL.toward(target, strength)


def _concentration_strength(moa_meta: pd.DataFrame) -> dict[tuple[str, float], float]:
    """Effect strength per treatment: 0.45 at a compound's lowest dose, 1.0 at its highest."""
    out = {}
    for compound, grp in moa_meta.groupby("compound"):
        concs = sorted(float(c) for c in grp["concentration"])
        for i, c in enumerate(concs):
            out[(str(compound), round(c, 6))] = 1.0 if len(concs) == 1 else 0.45 + 0.55 * i / (
                len(concs) - 1)
    return out


def _write_tiff(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, description="cellmorph SYNTHETIC image - not microscopy data",
                         metadata=None)
