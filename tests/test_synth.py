"""Synthetic BBBC021 plates: real layout, round trip through the index, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tifffile

from cellmorph import schema as sc
from cellmorph.cli import main
from cellmorph.datasets import index as ix
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021


def test_synth_then_index_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    assert main(["synth", "bbbc021", str(out), "--moa", "Eg5 inhibitors", "--moa",
                 "Kinase inhibitors", "--size", "64x80", "--sites", "2"]) == 0
    assert main(["index", "bbbc021", str(out), "--moa-subset", "-o",
                 str(out / "index.parquet")]) == 0
    df = ix.read_index(out / "index.parquet")
    written = sorted(out.rglob("*.tif"))
    indexed = pd_paths(df)
    assert all(Path(p).is_file() for p in indexed)
    assert len(indexed) == len(written)  # every synthesised file is indexed, and only those
    s = ix.summarize(df)
    assert s["moas"] == 2 and s["compounds"] == 5
    assert set(df[sc.SITE]) == {1, 2}
    assert s["control_images"] > 0
    img = tifffile.imread(indexed[0])
    assert img.dtype == np.uint16 and img.shape == (64, 80)
    assert "SYNTHETIC" in (out / "SYNTHETIC.txt").read_text()
    with tifffile.TiffFile(indexed[0]) as tf:
        assert "SYNTHETIC" in tf.pages[0].description


def pd_paths(df) -> list[str]:
    return [p for ch in sc.channels_of(df) for p in df[sc.path_column(ch)]]


def test_synth_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    kw = dict(moas=["Actin disruptors"], size=(48, 64), progress=False, max_concentrations=1)

    def digest(folder: Path) -> str:
        h = hashlib.sha256()
        for f in sorted(folder.rglob("*.tif")):
            h.update(f.read_bytes())
        return h.hexdigest()

    synthesize_bbbc021(tmp_path / "a", seed=3, **kw)
    synthesize_bbbc021(tmp_path / "b", seed=3, **kw)
    synthesize_bbbc021(tmp_path / "c", seed=4, **kw)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_moas_change_morphology_not_just_intensity(synth021_index) -> None:
    """Per-plate gain differences dominate mean intensity; morphology carries the MoA."""
    df = synth021_index
    means = []
    for _, row in df.iterrows():
        means.append([tifffile.imread(row[sc.path_column(c)]).mean() for c in sc.channels_of(df)])
    means = np.log(np.asarray(means))
    plate_var = df.assign(m=means[:, 1]).groupby(sc.PLATE)["m"].mean().var()
    assert plate_var > 0.01  # plates differ in brightness, as real plates do
