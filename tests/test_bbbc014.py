"""BBBC014 as it really is: channels, names, concentrations and labels, on the four real
sample fields and on a SYNTHETIC plate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellmorph import schema as sc
from cellmorph.datasets import bbbc014
from cellmorph.errors import CellmorphError
from cellmorph.synth.bbbc014_synthetic import synthesize_bbbc014


@pytest.fixture(scope="module")
def synth014(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth014")
    synthesize_bbbc014(root, size=(64, 80), progress=False)
    return root


def test_bbbc014_labels(synth014: Path) -> None:
    df = bbbc014.index_bbbc014(synth014)
    assert len(df) == 96
    assert sc.channels_of(df) == ["DAPI", "FITC"]
    lab = df[df[sc.ROLE] == sc.ROLE_TREATMENT]
    assert len(lab) == 64
    for line in ("MCF7", "A549"):
        sub = lab[lab["Metadata_CellLine"] == line]
        assert len(sub) == 32
        assert (sub[sc.MOA] == bbbc014.POSITIVE).sum() == 16
        cols = sub[sc.WELL].str[1:].astype(int)
        assert set(cols[sub[sc.MOA] == bbbc014.POSITIVE]) == {1, 2, 3, 4}
        assert set(cols[sub[sc.MOA] == bbbc014.NEGATIVE]) == {9, 10, 11, 12}
    # Channels are paired by well, never by file order.
    for _, row in df.iterrows():
        well = row[sc.WELL]
        tag = f"-{well[0]}-{well[1:]}"
        assert tag in Path(row["Path_DAPI"]).name and tag in Path(row["Path_FITC"]).name
        assert Path(row["Path_DAPI"]).name.startswith("Channel 2-")  # Channel 2 is DAPI
        assert Path(row["Path_FITC"]).name.startswith("Channel 1-")


def test_missing_channel_is_reported(synth014: Path, tmp_path: Path) -> None:
    folder = tmp_path / bbbc014.IMAGE_FOLDER
    folder.mkdir()
    for f in (synth014 / bbbc014.IMAGE_FOLDER).iterdir():
        if "-C-05" not in f.name or f.name.startswith("Channel 1"):
            (folder / f.name).symlink_to(f)
    with pytest.raises(CellmorphError, match=r"1 wells lack a channel.*C05"):
        bbbc014.index_bbbc014(tmp_path)


def test_pattern_is_overridable(synth014: Path, tmp_path: Path) -> None:
    folder = tmp_path / "renamed"
    folder.mkdir()
    for f in (synth014 / bbbc014.IMAGE_FOLDER).iterdir():
        ch, _, row, col, _ = f.stem.split("-")
        (folder / f"{row}{col}_{ch.replace(' ', '')}.bmp").symlink_to(f)
    with pytest.raises(CellmorphError, match="no file .* matches the pattern"):
        bbbc014.index_bbbc014(folder)
    layout = bbbc014.BBBC014Layout(pattern=r"(?P<row>[A-H])(?P<column>\d+)_Channel(?P<channel>\d)\.bmp")
    assert len(bbbc014.index_bbbc014(folder, layout)) == 96


SAMPLE = Path(__file__).parent / "data" / "bbbc014"  # 4 real BBBC014 fields (A01, A12)


@pytest.fixture()
def real014(tmp_path: Path) -> Path:
    """The real sample fields under the official folder name."""
    folder = tmp_path / bbbc014.IMAGE_FOLDER
    folder.mkdir()
    for f in SAMPLE.glob("*.tif"):
        (folder / f.name).symlink_to(f)
    return tmp_path


def test_real_sample_indexes_with_dapi_as_channel_2(real014: Path) -> None:
    df = bbbc014.index_bbbc014(real014)
    assert list(df[sc.WELL]) == ["A01", "A12"]
    assert all(Path(p).name.startswith("Channel 2-") for p in df["Path_DAPI"])
    assert all(Path(p).name.startswith("Channel 1-") for p in df["Path_FITC"])
    # DAPI shows nuclei only: most of its signal sits in a small fraction of the field,
    # unlike the reporter (cytoplasmic in A12).
    from cellmorph.imageio import read_image

    a12 = df[df[sc.WELL] == "A12"].iloc[0]
    dapi, fitc = read_image(a12["Path_DAPI"]), read_image(a12["Path_FITC"])
    bright = dapi > np.percentile(dapi, 80)
    assert dapi[bright].sum() / dapi.sum() > fitc[bright].sum() / fitc.sum()
    assert list(df[sc.MOA]) == [bbbc014.POSITIVE, bbbc014.NEGATIVE]
    # Without the plate map file: the documented series, 1e-7 M down to 1e-13 M.
    np.testing.assert_allclose(df[sc.CONCENTRATION], [1e-7, 1e-13])
    assert (df["Metadata_ConcentrationSource"] == "documented series").all()
    assert df["Path_DAPI"].map(lambda p: Path(p).is_absolute()).all()


def test_concentrations_come_from_the_plate_map_file(real014: Path) -> None:
    exponents = [-7 - c * 0.5 for c in range(12)] * 8
    lines = ["TNF-\xb5 dose (M)"] + [f"10^{e:g}" for e in exponents]
    (real014 / bbbc014.PLATEMAP_FILE).write_bytes("\r\n".join(lines).encode("latin-1"))
    df = bbbc014.index_bbbc014(real014)
    np.testing.assert_allclose(df[sc.CONCENTRATION], [1e-7, 10 ** -12.5])
    (real014 / bbbc014.PLATEMAP_FILE).write_text("10^-7\n" * 95)
    with pytest.raises(CellmorphError, match="found 95 concentrations, expected 96"):
        bbbc014.index_bbbc014(real014)


def test_synthetic_plate_uses_the_official_naming(synth014: Path) -> None:
    names = sorted(p.name for p in (synth014 / bbbc014.IMAGE_FOLDER).iterdir())
    assert "Channel 1-01-A-01-00.Bmp" in names and "Channel 2-96-H-12-00.Bmp" in names
    df = bbbc014.index_bbbc014(synth014)
    assert df[sc.SYNTHETIC].all()
    assert (df["Metadata_ConcentrationSource"].str.endswith(bbbc014.PLATEMAP_FILE)).all()
    a01 = df[df[sc.WELL] == "A01"].iloc[0]
    assert a01[sc.CONCENTRATION] == pytest.approx(1e-7, rel=0.01)
