"""BBBC014 labelling and channel pairing, on a SYNTHETIC plate."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellmorph import schema as sc
from cellmorph.datasets import bbbc014
from cellmorph.errors import CellmorphError
from cellmorph.synth.bbbc014 import synthesize_bbbc014


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
        assert Path(row["Path_DAPI"]).name.startswith("Channel1")


def test_missing_channel_is_reported(synth014: Path, tmp_path: Path) -> None:
    folder = tmp_path / bbbc014.IMAGE_FOLDER
    folder.mkdir()
    for f in (synth014 / bbbc014.IMAGE_FOLDER).iterdir():
        if "-C-05" not in f.name or f.name.startswith("Channel1"):
            (folder / f.name).symlink_to(f)
    with pytest.raises(CellmorphError, match=r"1 wells lack a channel.*C05"):
        bbbc014.index_bbbc014(tmp_path)


def test_pattern_is_overridable(synth014: Path, tmp_path: Path) -> None:
    folder = tmp_path / "renamed"
    folder.mkdir()
    for f in (synth014 / bbbc014.IMAGE_FOLDER).iterdir():
        ch, _, row, col = f.stem.split("-")
        (folder / f"{row}{col}_{ch}.bmp").symlink_to(f)
    with pytest.raises(CellmorphError, match="no file .* matches the pattern"):
        bbbc014.index_bbbc014(folder)
    layout = bbbc014.BBBC014Layout(pattern=r"(?P<row>[A-H])(?P<column>\d+)_(?P<channel>\w+)\.bmp")
    assert len(bbbc014.index_bbbc014(folder, layout)) == 96
