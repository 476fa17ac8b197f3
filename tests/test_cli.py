"""The command line: one error line, non-zero exit, no traceback unless --debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellmorph.atomic import atomic_path, write_parquet
from cellmorph.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cellmorph.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_every_command_has_help() -> None:
    for cmd in (["--help"], ["index", "--help"], ["index", "bbbc021", "--help"],
                ["index", "bbbc014", "--help"], ["index", "platemap", "--help"],
                ["synth", "bbbc021", "--help"], ["synth", "bbbc014", "--help"],
                ["download", "bbbc021", "--help"], ["demo", "--help"]):
        assert main(cmd) == 0


def test_bad_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    res = _run("index", "platemap", str(tmp_path / "missing.csv"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: plate map {tmp_path / 'missing.csv'} not found; check the path"]
    res = _run("index", "platemap", str(tmp_path / "missing.csv"), "--debug")
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = _run("synth", "bbbc021", str(blocker / "out"), "--size", "32x32")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: cannot create output folder {blocker / 'out'}")


def test_empty_selection_and_bad_size(tmp_path: Path) -> None:
    res = _run("synth", "bbbc021", str(tmp_path / "o"), "--moa", "Eg5 inhibitors",
               "--compound", "taxol")
    assert res.returncode == 2 and "not labelled treatments" in res.stderr
    res = _run("synth", "bbbc021", str(tmp_path / "o"), "--size", "big")
    assert res.returncode == 2 and "HEIGHTxWIDTH" in res.stderr


def test_corrupt_image_in_a_platemap(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint16))
    pd.DataFrame({"plate": ["p"], "well": ["A1"], "site": [1], "compound": ["x"],
                  "concentration": [1], "path_dna": ["a.tif"]}).to_csv(tmp_path / "pm.csv",
                                                                       index=False)
    assert main(["index", "platemap", str(tmp_path / "pm.csv")]) == 0
    assert (tmp_path / "pm.index.parquet").is_file()


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
