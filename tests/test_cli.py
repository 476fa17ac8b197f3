"""The command line: one error line, non-zero exit, no traceback unless --debug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellmorph import schema as sc
from cellmorph.atomic import write_csv, write_parquet
from cellmorph.cli import main
from cellmorph.errors import CellmorphError


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cellmorph.cli", *args], capture_output=True,
                          text=True, timeout=120)


def _call(capsys, *args: str) -> subprocess.CompletedProcess:
    """The console entry point in this process (the same code as ``_run``, without seconds
    of interpreter start and imports per call)."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)



@pytest.fixture(scope="module")
def tiny021(tiny021_six: Path) -> Path:
    """Six plates are enough here (see conftest), and a third of the work."""
    return tiny021_six

def test_every_command_has_help() -> None:
    for cmd in (["--help"], ["index", "--help"], ["index", "bbbc021", "--help"],
                ["index", "bbbc014", "--help"], ["index", "platemap", "--help"],
                ["synth", "bbbc021", "--help"], ["synth", "bbbc014", "--help"],
                ["download", "bbbc021", "--help"], ["demo", "--help"]):
        assert main(cmd) == 0


# Commands that run no network, with what they need; each must start without torch & co.
NO_NETWORK = [
    ["index", "platemap", "{tmp}/missing.csv"],
    ["config-reference"],
    ["synth", "bbbc021", "{tmp}/s", "--moa", "Eg5 inhibitors", "--size", "32x40",
     "--max-concentrations", "1", "--controls-per-plate", "1", "-q"],
    ["index", "bbbc021", "{tmp}/s", "--moa-subset", "-o", "{tmp}/i.parquet"],
    ["evaluate", "ljosa2013", "--no-map", "-o", "{tmp}/ev", "-q"],
    ["export", "ljosa2013", "-o", "{tmp}/w.h5ad"],
]
HEAVY = ("torch", "timm", "torchvision", "ray")


def test_commands_that_run_no_network_load_no_torch(tmp_path: Path) -> None:
    """Start-up is imports: torch, timm and torchvision alone take seconds and a GB, so a
    command that runs no network must not load them (the issue's ~10 s to say a file is
    missing). One interpreter runs the commands in turn, as separate shells would."""
    script = ("import json, sys\nfrom cellmorph.cli import main\nout = []\n"
              "for args in json.loads(sys.argv[1]):\n"
              "    code = main(args)\n"
              f"    out.append([code, sorted(m for m in {HEAVY!r} if m in sys.modules)])\n"
              "print(json.dumps(out))\n")
    import json

    commands = [[a.format(tmp=tmp_path) for a in args] for args in NO_NETWORK]
    res = subprocess.run([sys.executable, "-c", script, json.dumps(commands)],
                         capture_output=True, text=True, timeout=300)
    results = json.loads(res.stdout.strip().splitlines()[-1])
    for args, (code, loaded) in zip(NO_NETWORK, results, strict=True):
        assert code == (2 if "missing.csv" in args[-1] else 0), (args, res.stderr)
        assert loaded == [], f"cellmorph {' '.join(args)} loaded {loaded}"


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


def test_evaluate_bad_tables(tmp_path: Path, capsys) -> None:
    pd.DataFrame({"plate": ["p"], "well": ["A01"], "f": [1.0]}).to_csv(tmp_path / "a.csv",
                                                                       index=False)
    res = _call(capsys, "evaluate", str(tmp_path / "a.csv"))
    assert res.returncode == 2 and "no Metadata_Plate/Metadata_Well" in res.stderr
    pd.DataFrame({"Metadata_Plate": ["p"], "Metadata_Well": ["A01"], "Metadata_Compound": ["c"],
                  "Metadata_Role": ["treatment"], "Metadata_MoA": ["m"],
                  "Metadata_Treatment": ["c@1"], "Metadata_Batch": ["b"],
                  "f": ["x"]}).to_csv(tmp_path / "b.csv", index=False)
    res = _call(capsys, "evaluate", str(tmp_path / "b.csv"))
    assert res.returncode == 2 and "non-numeric feature columns ['f']" in res.stderr


@pytest.mark.auto_precision  # refused before any network runs
def test_profile_config_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("index: i.parquet\noutput: out\nmodle: resnet50\n")
    res = _call(capsys, "profile", str(tmp_path / "c.yaml"))
    assert res.returncode == 2 and "modle: not a setting (did you mean model?)" in res.stderr
    res = _call(capsys, "profile", "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and "index: Field required" in res.stderr
    res = _call(capsys, "profile", "--index", str(tmp_path / "none.parquet"), "-o",
                str(tmp_path / "o"))
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


def _screen(tmp_path: Path, rows: list[dict] | None = None, **columns) -> Path:
    """A small plate map (2 MoAs x 2 compounds, DMSO) with real TIFFs; ``columns`` replace or
    add columns."""
    img = tmp_path / "img"
    img.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    default = []
    for w, (compound, label) in enumerate([("DMSO", None), ("DMSO", None), ("a1", "m1"),
                                           ("a2", "m1"), ("b1", "m2"), ("b2", "m2")]):
        path = img / f"w{w}.tif"
        tifffile.imwrite(path, rng.integers(0, 4000, (40, 48)).astype(np.uint16))
        default.append({"plate": "P1", "well": f"B{w + 1:02d}", "site": 1,
                        "compound": compound, "concentration": 0 if label is None else 1,
                        "label": label, "path_dna": f"img/{path.name}",
                        "path_actin": f"img/{path.name}"})
    df = pd.DataFrame(rows or default)
    for name, values in columns.items():
        df[name] = values
    out = tmp_path / "plate_map.csv"
    df.to_csv(out, index=False)
    return out


BAD_INPUTS = [
    # (name, how to make the input, arguments, expected text in the one error line)
    ("negative concentration",
     lambda t: _screen(t, concentration=[0, 0, 1, -1, 1, 1]),
     ["index", "platemap", "{input}"], "line 5: Metadata_Concentration is -1, negative"),
    ("path_ without a stain",
     lambda t: _screen(t, path_=["x.tif"] * 6),
     ["index", "platemap", "{input}"], "column 'path_' names no stain"),
    ("two columns for one stain",
     lambda t: _screen(t, Path_DNA=["w0.tif"] * 6),
     ["index", "platemap", "{input}"], "are both the stain"),
    ("-o is the input",
     lambda t: _screen(t),
     ["index", "platemap", "{input}", "-o", "{input}"], "is an input of this command"),
    ("-o onto a FIFO",
     lambda t: (_screen(t), os.mkfifo(t / "fifo"))[0],
     ["index", "platemap", "{input}", "-o", "{tmp}/fifo"], "not a regular file"),
    ("-o under /proc",
     lambda t: _screen(t),
     ["index", "platemap", "{input}", "-o", "/proc/cellmorph-nonexistent/i.parquet"],
     "/proc/cellmorph-nonexistent"),
    ("report -o is its own input table",
     lambda t: _predictions(t),
     ["report", "{input}", "-o", "{input}"], "give a file name ending in .html"),
    ("report -o a run's predictions table",
     lambda t: _predictions(t),
     ["report", "{tmp}", "-o", "{input}"], "give a file name ending in .html"),
    ("a Ray address where nothing answers",
     lambda t: _indexed(t),
     ["profile", "--index", "{input}", "-o", "{tmp}/run", "--executor", "ray",
      "--ray-address", "127.0.0.1:1"], "nothing answered at ray_address 127.0.0.1:1"),
    ("a ray:// address without Ray's client",
     lambda t: _indexed(t),
     ["profile", "--index", "{input}", "-o", "{tmp}/run", "--executor", "ray",
      "--ray-address", "ray://127.0.0.1:10001"], "pip install 'ray[client]'"),
    ("a boolean for a number",
     lambda t: _write(t / "c.yaml", "index: i.parquet\noutput: o\nepochs: true\n"),
     ["train", "{input}"], "epochs: a number is needed, not true"),
    ("-o is a folder",
     lambda t: _screen(t),
     ["index", "platemap", "{input}", "-o", "{tmp}"], "is a folder"),
    ("YAML top level is a list",
     lambda t: _write(t / "c.yaml", "- index: i.parquet\n"),
     ["profile", "{input}"], "the top level must be a mapping"),
    ("grid of zero tiles",
     lambda t: _write(t / "c.yaml", "index: i.parquet\noutput: o\npreprocess: {grid: [0, 0]}\n"),
     ["profile", "{input}"], "preprocess.grid.0: Input should be greater than 0"),
    ("negative preprocessing workers (a union of int and 'auto')",
     lambda t: _write(t / "c.yaml", "index: i.parquet\noutput: o\npreprocess_workers: -1\n"),
     ["profile", "{input}"], "preprocess_workers: Input should be greater than or equal to 0"),
    ("empty --cache-dir (an unset shell variable)",
     lambda t: _indexed(t),
     ["profile", "--index", "{input}", "-o", "{tmp}/run", "--cache-dir", ""],
     "error: settings: cache_dir: an empty path; give a file or folder\n"),
    ("empty -o for train",
     lambda t: _indexed(t),
     ["train", "--index", "{input}", "-o", ""], "output: an empty path; give a file or folder"),
    ("empty cache_dir in YAML",
     lambda t: _write(t / "c.yaml", "index: i.parquet\noutput: o\ncache_dir: ' '\n"),
     ["profile", "{input}"], "cache_dir: an empty path"),
    ("a validator's message without pydantic's prefix",
     lambda t: _write(t / "c.yaml", "index: i.parquet\noutput: o\n"
                      "preprocess: {rescale_percentiles: [99, 1]}\n"),
     ["profile", "{input}"], "preprocess: rescale_percentiles [99.0, 1.0]: the first"),
    ("infinite learning rate",
     lambda t: _write(t / "c.yaml", "index: i.parquet\noutput: o\nlr: .inf\n"),
     ["train", "{input}"], "lr: Input should be a finite number"),
    ("unknown device",
     lambda t: _indexed(t),
     ["profile", "--index", "{input}", "-o", "{tmp}/run", "--device", "tpu0"],
     "unknown device 'tpu0'"),
    ("unknown model",
     lambda t: _indexed(t),
     ["profile", "--index", "{input}", "-o", "{tmp}/run", "--model", "resnet_fifty"],
     "timm does not know the model 'resnet_fifty'"),
    ("single MoA to train on",
     lambda t: _indexed(t, label=[None, None, "m1", "m1", "m1", "m1"]),
     ["train", "--index", "{input}", "-o", "{tmp}/run", "--model", "tf_efficientnet_lite0"],
     "only one MoA class ('m1') is labelled"),
    ("bad BBBC014 pattern",
     lambda t: t,
     ["index", "bbbc014", "{input}", "--pattern", "(["], "invalid pattern"),
    ("synth: an unknown MoA (no folder is made)",
     lambda t: t,
     ["synth", "bbbc021", "{tmp}/run", "--moa", "Nope"], "unknown MoA(s) ['Nope']"),
    ("synth: a field too large to draw",
     lambda t: t,
     ["synth", "bbbc021", "{tmp}/run", "--size", "200000x200000"], "at most 16,777,216 pixels"),
    ("a well of two treatments",
     lambda t: _screen(t, well=["B01", "B02", "B03", "B03", "B05", "B06"],
                       site=[1, 1, 1, 2, 1, 1]),
     ["index", "platemap", "{input}"], "well B03 holds 2 treatments (a1@1, a2@1; line 4, line 5)"),
    ("a field listed twice",
     lambda t: _screen(t, well=["B01", "B02", "B03", "B03", "B05", "B06"]),
     ["index", "platemap", "{input}"], "line 4 and line 5 are both plate P1, well B03, site 1"),
    ("sites out of range",
     lambda t: t,
     ["synth", "bbbc021", "{tmp}/s", "--sites", "9"], "Invalid value for '--sites'"),
]


def _predictions(tmp_path: Path) -> Path:
    """A bare per-treatment prediction table, as a run writes it."""
    table = pd.DataFrame({sc.TREATMENT: ["a@1", "b@1"], sc.MOA: ["m1", "m2"],
                          "Prob_m1": [0.9, 0.2], "Prob_m2": [0.1, 0.8]})
    return write_csv(table, tmp_path / "predictions_treatment.csv")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _indexed(tmp_path: Path, **columns) -> Path:
    from cellmorph.datasets.platemap import index_platemap

    return write_parquet(index_platemap(_screen(tmp_path, **columns)), tmp_path / "i.parquet")


@pytest.mark.auto_precision  # refused before any network runs; the precision does not matter
@pytest.mark.parametrize(("name", "make", "args", "expected"), BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path, capsys, name, make, args,
                                             expected) -> None:
    # In-process: the same entry point as the console script, without 7 s of imports each
    # (test_bad_input_is_one_line_without_traceback runs the real executable).
    source = make(tmp_path)
    capsys.readouterr()
    code = main([a.format(input=source, tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2, (name, err)
    assert expected in err, (name, err)
    assert "Traceback" not in err
    if err.startswith("error:"):
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing was created, let alone preprocessed


def test_no_cuda_is_refused_before_preprocessing(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    source = _indexed(tmp_path)
    code = main(["profile", "--index", str(source), "-o", str(tmp_path / "run"), "--device",
                 "cuda"])
    assert code == 2 and "no CUDA GPU is available" in capsys.readouterr().err
    assert not (tmp_path / "run" / "cache").exists()


def test_runs_of_two_backbones_share_one_tile_cache(tiny021: Path, tmp_path: Path,
                                                     capsys) -> None:
    shared = tmp_path / "tiles"
    stamps = []
    for run, model in (("a", "tf_efficientnet_lite0"), ("b", "resnet18")):
        res = _call(capsys, "profile", "--index", str(tiny021), "-o", str(tmp_path / run),
                    "--model", model, "--weights", "random", "--cache-dir", str(shared), "-q",
                    "--precision", "fp32")
        assert res.returncode == 0, res.stderr
        assert not (tmp_path / run / "cache").exists()
        stamps.append({p: p.stat().st_mtime_ns for p in shared.rglob("*.parquet")})
    (entry,) = [p for p in shared.iterdir() if p.is_dir()]  # one key: same preprocessing
    assert stamps[0] and stamps[1] == stamps[0]  # the second run decoded nothing
    assert all(p.parent == entry for p in stamps[0])


def test_control_spelling_and_line_numbers(tmp_path: Path) -> None:
    from cellmorph.datasets.platemap import index_platemap

    pm = _screen(tmp_path, compound=[" dmso", "DMSO ", "a1", "a2", "b1", "b2"])
    df = index_platemap(pm)
    assert (df.loc[df[sc.WELL].isin(["B01", "B02"]), sc.ROLE] == sc.ROLE_CONTROL).all()
    assert set(df.loc[df[sc.ROLE] == sc.ROLE_CONTROL, sc.COMPOUND]) == {"DMSO"}
    bad = _screen(tmp_path, well=["B01", "B02", "ZZ", "B04", "B05", "B06"])
    with pytest.raises(CellmorphError, match="line 4: not a well name"):
        index_platemap(bad)  # the header is line 1, so the third row is line 4


def test_evaluate_edges_write_nothing(tmp_path: Path) -> None:
    from cellmorph.api import evaluate

    rows = []
    for i, (role, moa, comp) in enumerate([("control", "DMSO", "DMSO")] * 3
                                          + [("treatment", "m1", "a"), ("treatment", "m1", "b"),
                                             ("treatment", "m2", "c"), ("treatment", "m2", "d")]):
        rows.append({sc.PLATE: "P", sc.WELL: f"A{i + 1:02d}", sc.ROLE: role, sc.MOA: moa,
                     sc.COMPOUND: comp, sc.TREATMENT: f"{comp}@1", sc.BATCH: "b",
                     "f1": float(i), "f2": float(i % 3)})
    two = pd.DataFrame(rows)
    single = two.assign(**{sc.MOA: two[sc.MOA].replace("m2", "m1")})
    one_moa = evaluate(single, output=tmp_path / "ev1", map_null_size=100)  # what it allows
    assert one_moa.nn == [] and "a 1-NN among one MoA is always right" in one_moa.skipped["nsc"]
    assert "1 labelled MoA(s)" in one_moa.skipped["map_consistency"]
    assert (tmp_path / "ev1" / "distance_to_controls.csv").is_file()
    constant = two.assign(f1=1.0, f2=2.0)
    with pytest.raises(CellmorphError, match="every feature is constant"):
        evaluate(constant, output=tmp_path / "ev2", map=False)
    assert not (tmp_path / "ev2").exists()
    # One feature missing everywhere is dropped; the wells are kept.
    result = evaluate(two.assign(f3=np.nan), map=False)
    assert result.notes["missing_features_dropped"] == 1
    assert result.n_wells == 4


def test_special_files_are_never_replaced(tmp_path: Path, capsys) -> None:
    """BAD case: -o onto a FIFO (or, as root, a device) replaced it with a regular file."""
    import stat

    source = _screen(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    targets = [fifo] + [Path("/dev/full")] * (os.geteuid() == 0)
    for target in targets:
        before = os.stat(target, follow_symlinks=False)
        assert _call(capsys, "index", "platemap", str(source), "-o", str(target)).returncode == 2
        after = os.stat(target, follow_symlinks=False)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
        assert after.st_ino == before.st_ino
    # A symbolic link is written through: the file it points to changes, the link stays.
    real = tmp_path / "real.parquet"
    real.write_bytes(b"old")
    link = tmp_path / "link.parquet"
    link.symlink_to(real)
    assert _call(capsys, "index", "platemap", str(source), "-o", str(link)).returncode == 0
    assert link.is_symlink() and pd.read_parquet(real).shape[0] == 6


def test_report_never_overwrites_its_input(tmp_path: Path, capsys) -> None:
    """BAD case: `cellmorph report preds.csv -o preds.csv` overwrote the table with HTML."""
    table = _predictions(tmp_path)
    before = table.read_bytes()
    for out in (table, tmp_path / "other.csv"):
        assert _call(capsys, "report", str(table), "-o", str(out)).returncode == 2
    assert table.read_bytes() == before
    assert _call(capsys, "report", str(table)).returncode == 0
    assert (tmp_path / "predictions_treatment.report.html").is_file()
