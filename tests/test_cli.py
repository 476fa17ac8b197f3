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


def test_evaluate_bundled_ljosa_prints_nsc_and_nscb(tmp_path: Path) -> None:
    res = _run("evaluate", "ljosa2013", "-o", str(tmp_path / "ev"), "--no-map")
    assert res.returncode == 0, res.stderr
    nsc = [line for line in res.stdout.splitlines() if line.startswith("NSC ")]
    nscb = [line for line in res.stdout.splitlines() if line.startswith("NSCB ")]
    assert len(nsc) == 2 and len(nscb) == 2
    assert "Cholesterol-lowering, Kinase inhibitors" in nscb[0]
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert (tmp_path / "ev" / "confusion_nsc_cosine.png").stat().st_size > 1000
    assert (tmp_path / "ev" / "evaluate_config.yaml").is_file()


def test_evaluate_bad_tables(tmp_path: Path) -> None:
    pd.DataFrame({"plate": ["p"], "well": ["A01"], "f": [1.0]}).to_csv(tmp_path / "a.csv",
                                                                       index=False)
    res = _run("evaluate", str(tmp_path / "a.csv"))
    assert res.returncode == 2 and "no Metadata_Plate/Metadata_Well" in res.stderr
    pd.DataFrame({"Metadata_Plate": ["p"], "Metadata_Well": ["A01"], "Metadata_Compound": ["c"],
                  "Metadata_Role": ["treatment"], "Metadata_MoA": ["m"],
                  "Metadata_Treatment": ["c@1"], "Metadata_Batch": ["b"],
                  "f": ["x"]}).to_csv(tmp_path / "b.csv", index=False)
    res = _run("evaluate", str(tmp_path / "b.csv"))
    assert res.returncode == 2 and "non-numeric feature columns ['f']" in res.stderr


def test_profile_config_errors(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("index: i.parquet\noutput: out\nmodle: resnet50\n")
    res = _run("profile", str(tmp_path / "c.yaml"))
    assert res.returncode == 2 and "modle: Extra inputs are not permitted" in res.stderr
    res = _run("profile", "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and "index: Field required" in res.stderr
    res = _run("profile", "--index", str(tmp_path / "none.parquet"), "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "none.parquet not found" in res.stderr


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    from cellmorph.config import EvaluateConfig, ProfileConfig, TrainConfig, load_config

    kind = (EvaluateConfig if path.name.startswith("evaluate") else
            ProfileConfig if "profile" in path.name else TrainConfig)
    cfg = load_config(path, kind)
    assert cfg.model_dump()


def test_version_and_usage_errors() -> None:
    res = _run("--version")
    assert res.returncode == 0 and res.stdout.strip().startswith("cellmorph ")
    for args in ([], ["profile", "--nope"], ["index", "bbbc021"], ["frobnicate"]):
        res = _run(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert "try 'cellmorph" in res.stderr.lower(), args  # the hint
        assert "NoArgsIsHelpError" not in res.stderr and "Traceback" not in res.stderr


def test_help_shows_defaults_without_type_tags() -> None:
    profile_help = _run("profile", "--help").stdout
    assert "[default: tf_efficientnet_lite0]" in profile_help
    assert "[default: pawlowski]" in profile_help
    train_help = _run("train", "--help").stdout
    for option in ("--precision", "--preprocess", "--fold-by", "--freeze-stages",
                   "--batch-size"):
        assert option in train_help, option
    assert "[default: resnet50]" in train_help and "[default: kensert]" in train_help
    evaluate_help = _run("evaluate", "--help").stdout
    assert "--sphering / --no-sphering" in evaluate_help
    for text in (profile_help, train_help, evaluate_help):
        assert "<bool>" not in text
        for line in text.splitlines():  # every option has a description
            if line.strip().startswith("--") and "  " not in line.strip():
                pytest.fail(f"option without a description: {line!r}")


def test_config_reference_is_current() -> None:
    from cellmorph.config import reference_markdown

    page = Path(__file__).parents[1] / "docs" / "config.md"
    assert page.read_text() == reference_markdown(), "run: cellmorph config-reference -o docs/config.md"
    for key in ("freeze_stages", "cached_trunk", "normalize_by", "channel_mode", "rgb_map"):
        assert f"`{key}`" in page.read_text()
