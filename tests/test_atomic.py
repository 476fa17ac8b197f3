"""Atomic writes: all or nothing, the usual file mode, a full disk named clearly, locks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellmorph.atomic import (
    atomic_path,
    folder_lock,
    remove_partial_files,
    write_parquet,
    write_text,
)
from cellmorph.errors import CellmorphError


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_outputs_get_the_usual_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text("x", tmp_path / "a.txt")
        assert oct(path.stat().st_mode & 0o777) == "0o644"
    finally:
        os.umask(old)


def test_disk_full_names_the_path(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "profiles.parquet"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pyarrow.parquet.write_table", full)
    with pytest.raises(CellmorphError, match=r"no space left on the device while writing "
                                             r".*profiles\.parquet"):
        write_parquet(pd.DataFrame({"a": [1.0]}), target)
    assert not target.exists() and not list(tmp_path.glob("*.part"))


def test_wide_tables_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.concat([pd.DataFrame({"Metadata_Well": ["A01", "A02"], "Metadata_Site": [1, 2]}),
                    pd.DataFrame(rng.random((2, 300)).astype(np.float32),
                                 columns=[f"Feature_{i}" for i in range(300)])], axis=1)
    pd.testing.assert_frame_equal(pd.read_parquet(write_parquet(df, tmp_path / "w.parquet")), df)


def test_partial_files_are_removed_outside_skipped_folders(tmp_path: Path) -> None:
    (tmp_path / "plates").mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "plates" / ".a.parquet.x.cellmorph.part").write_text("half")
    (tmp_path / "cache" / ".b.npy.y.cellmorph.part").write_text("another run's, in progress")
    (tmp_path / "plates" / "download.zip.part").write_text("not this program's")
    (tmp_path / "plates" / ".c.npy.z.part").write_text("nor this (no cellmorph mark)")
    (tmp_path / "link.cellmorph.part").symlink_to(tmp_path / "plates" / "download.zip.part")
    assert remove_partial_files(tmp_path, skip=("cache",)) == 1
    assert (tmp_path / "cache" / ".b.npy.y.cellmorph.part").exists()
    assert (tmp_path / "plates" / "download.zip.part").exists()
    assert (tmp_path / "plates" / ".c.npy.z.part").exists()
    assert remove_partial_files(tmp_path / "cache", recursive=False) == 1


def test_folder_lock_is_reentrant(tmp_path: Path) -> None:
    with folder_lock(tmp_path), folder_lock(tmp_path):
        assert (tmp_path / ".cellmorph.lock").exists()
