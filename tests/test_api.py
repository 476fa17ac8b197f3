"""The Python API as a notebook user meets it: the entry points are importable from
``cellmorph``, their documented examples run, and the README's Python section runs as written."""

from __future__ import annotations

import doctest
import os
import pydoc
import re
from pathlib import Path

import pandas as pd
import pytest

import cellmorph
from cellmorph import api
from cellmorph import schema as sc
from cellmorph.backbones import fusion
from cellmorph.datasets import bbbc021
from cellmorph.datasets import index as datasets_index
from cellmorph.evaluation import activity as evaluation_activity
from cellmorph.evaluation import calls as evaluation_calls
from cellmorph.evaluation import potency as evaluation_potency
from cellmorph.evaluation import predictions as evaluation_predictions
from cellmorph.evaluation import profiles as evaluation_profiles
from cellmorph.evaluation import replicates as evaluation_replicates
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021

README = Path(__file__).parents[1] / "README.md"


def test_help_lists_the_entry_points() -> None:
    text = pydoc.render_doc(cellmorph, renderer=pydoc.plaintext)
    for name in ("index_bbbc021", "index_platemap", "profile", "evaluate", "train",
                 "compare_init"):
        assert f"{name}(" in text, name
        assert callable(getattr(cellmorph, name))
    assert cellmorph.profile is api.profile


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("tiny")
    synthesize_bbbc021(root, moas=["Actin disruptors", "Protein synthesis"], size=(64, 80),
                       max_concentrations=1, controls_per_plate=2, progress=False)
    return cellmorph.index_bbbc021(root, moa_subset=True)


@pytest.mark.parametrize("module", [bbbc021, datasets_index, evaluation_profiles,
                                    evaluation_predictions,
                                    evaluation_calls, evaluation_activity, evaluation_potency,
                                    evaluation_replicates, fusion],
                         ids=lambda m: m.__name__)
def test_documented_examples_run(module, tiny_index, tmp_path) -> None:
    globs = {"index": tiny_index, "tmp": tmp_path, **vars(module)}
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in finder.find(module, globs=globs) if t.examples]
    assert tests, f"{module.__name__} documents no example"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} documented example(s) failed"


# In the order they run: the later examples use what the earlier ones made under ``tmp``.
ENTRY_POINT_ORDER = [
    "read_index", "read_profiles", "synthesize_bbbc021", "synthesize_bbbc014", "index_bbbc021",
    "index_bbbc014", "index_platemap", "index_loaddata", "profile", "evaluate", "describe",
    "figures", "export", "write_h5ad", "config_reference", "translocation", "train",
    "embed", "compare_init", "explain", "report", "download_bbbc021", "download_bbbc014", "run_demo"]
SKIPPED_EXAMPLES = {  # documented, not run here, and why
    "download_bbbc021": "the network; test_download runs the code against a local mirror",
    "download_bbbc014": "the network; test_download runs the code against a local mirror",
    "run_demo": "minutes; every step it takes has its own tested example above"}


@pytest.mark.auto_precision  # the examples as a user types them
def test_every_entry_point_documents_an_example_that_runs(tiny_index, tmp_path) -> None:
    """Each ``cellmorph.__all__`` entry point's doctest, run in order in one folder."""
    import sys

    names = [n for n in cellmorph.__all__ if n not in ("CellmorphError", "__version__")]
    assert sorted(ENTRY_POINT_ORDER) == sorted(names)
    fixtures = {"index": tiny_index, "tmp": tmp_path,
                "bbbc014_sample": cellmorph.synthesize_bbbc014(tmp_path / "sample014",
                                                               size=(64, 80), progress=False
                                                               ).parent,
                "plate_map": _platemap(tiny_index, tmp_path),
                "load_data": _loaddata(tiny_index, tmp_path)}
    finder = doctest.DocTestFinder(recurse=False)
    for name in ENTRY_POINT_ORDER:
        function = getattr(cellmorph, name)
        globs = {**vars(sys.modules[function.__module__]), **vars(api), **fixtures}
        tests = [t for t in finder.find(function, name, globs=globs) if t.examples]
        examples = [e for t in tests for e in t.examples]
        assert examples, f"{name} documents no example"
        ran = [e for e in examples if not e.options.get(doctest.SKIP)]
        assert bool(ran) == (name not in SKIPPED_EXAMPLES), name
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in tests:
            runner.run(test)
        assert runner.failures == 0, f"{name}: {runner.failures} example(s) failed"


def test_index_dataframe_and_root_metadata(tiny_index, tmp_path) -> None:
    # ROOT's own metadata CSVs are used, exactly as on the command line.
    assert set(tiny_index[sc.PLATE]) <= set(bbbc021.read_image_metadata()[
        "Image_Metadata_Plate_DAPI"])
    assert sc.treatments(tiny_index)[sc.COMPOUND].nunique() < 38
    # A DataFrame is accepted as the index and saved with the run.
    result = cellmorph.profile(index=tiny_index, output=tmp_path / "p", progress=False,
                               precision="fp32", preprocess={"grid": [1, 1], "tile_size": 32,
                                           "drop_empty": False})
    assert (tmp_path / "p" / "index.parquet").is_file()
    assert len(result.wells) == tiny_index[sc.WELL_KEYS].drop_duplicates().shape[0]
    assert (result.wells[sc.COUNT] == 1).all()  # one profiled image a well
    assert (result.treatments[sc.COUNT] >= 1).all()  # wells of a treatment


@pytest.mark.auto_precision  # the README's code as a user runs it
def test_readme_python_section_runs_as_written(tmp_path, monkeypatch) -> None:
    text = README.read_text()
    section = text[text.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    result = namespace["result"]
    assert 0 <= result.nn_result("nsc", "cosine").accuracy <= 1
    assert (tmp_path / "runs" / "profile" / "evaluation" / "metrics.json").is_file()
    assert os.path.isdir(tmp_path / "data")


def test_the_package_names_stay_callable_in_a_fresh_interpreter() -> None:
    """README tour: `cellmorph.report` and `cellmorph.explain` were subpackages that shadowed
    the functions once any entry point had imported the API."""
    import subprocess
    import sys

    code = ("import cellmorph; cellmorph.read_index; "
            "print(callable(cellmorph.report), callable(cellmorph.explain))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True True"


def test_every_entry_point_runs_through_the_package(tiny_index, tmp_path) -> None:
    """Each name of ``cellmorph.__all__`` called through the package, after the others."""
    from cellmorph.synth.bbbc014_synthetic import synthesize_bbbc014 as _  # noqa: F401 (import order)

    small = {"grid": [1, 1], "tile_size": 32, "drop_empty": False, "illumination": False}
    tiny_root = tmp_path / "tiny"
    calls = {
        "read_index": lambda: cellmorph.read_index(tiny_index),
        "synthesize_bbbc021": lambda: cellmorph.synthesize_bbbc021(
            tiny_root, moas=["Actin disruptors", "Protein synthesis"], size=(64, 80),
            max_concentrations=1, controls_per_plate=2, progress=False),
        "index_bbbc021": lambda: cellmorph.index_bbbc021(tiny_root, moa_subset=True),
        "synthesize_bbbc014": lambda: cellmorph.synthesize_bbbc014(tmp_path / "b014",
                                                                   size=(64, 80)),
        "index_bbbc014": lambda: cellmorph.index_bbbc014(tmp_path / "b014"),
        "index_platemap": lambda: cellmorph.index_platemap(_platemap(tiny_index, tmp_path)),
        "index_loaddata": lambda: cellmorph.index_loaddata(_loaddata(tiny_index, tmp_path)),
        "profile": lambda: cellmorph.profile(index=tiny_index, output=tmp_path / "p",
                                             preprocess=small, precision="fp32",
                                             progress=False),
        "read_profiles": lambda: cellmorph.read_profiles(tmp_path / "p"),
        "evaluate": lambda: cellmorph.evaluate("ljosa2013", map=False, conformal=False),
        "write_h5ad": lambda: cellmorph.write_h5ad(cellmorph.read_profiles("ljosa2013"),
                                                   tmp_path / "l.h5ad"),
        "train": lambda: cellmorph.train(
            index=tiny_index, output=tmp_path / "t", model="tf_efficientnet_lite0",
            preset="fast", epochs=1, folds=["emetine"], preprocess=small, precision="fp32",
            progress=False),
        "compare_init": lambda: cellmorph.compare_init(
            {"index": str(tmp_path / "t" / "index.parquet"), "output": str(tmp_path / "c"),
             "model": "tf_efficientnet_lite0", "preset": "fast", "epochs": 1,
             "folds": ["emetine"], "preprocess": small, "precision": "fp32"}, progress=False),
        "embed": lambda: cellmorph.embed(cellmorph.train(
            index=tiny_index, output=tmp_path / "weak", model="tf_efficientnet_lite0",
            label="compound", preset="fast", epochs=1, freeze_stages=5, preprocess=small,
            precision="fp32", progress=False).config.output, progress=False),
        "translocation": lambda: cellmorph.translocation(
            cellmorph.index_bbbc014(tmp_path / "b014"), progress=False),
        "explain": lambda: cellmorph.explain(tmp_path / "t", steps=2, size=32, filters=1,
                                             crops_per_moa=1, progress=False),
        "report": lambda: cellmorph.report(tmp_path / "t"),
        "describe": lambda: cellmorph.describe(tiny_index),
        "export": lambda: cellmorph.export(tmp_path / "p" / "profiles_well.parquet",
                                           tmp_path / "w.h5ad"),
        "config_reference": lambda: cellmorph.config_reference(),
        "figures": lambda: cellmorph.figures(cellmorph.evaluate("ljosa2013", map=False)),
    }
    entry_points = [n for n in cellmorph.__all__ if n not in ("CellmorphError", "__version__")]
    assert sorted([*calls, *SKIPPED_EXAMPLES]) == sorted(entry_points)
    for name, call in calls.items():
        assert callable(getattr(cellmorph, name)), name
        assert call() is not None, name


def _platemap(index: pd.DataFrame, tmp_path: Path) -> Path:
    rows = index.rename(columns={sc.PLATE: "plate", sc.WELL: "well", sc.SITE: "site",
                                 sc.COMPOUND: "compound", sc.CONCENTRATION: "concentration",
                                 sc.MOA: "label", "Path_DAPI": "path_DAPI"})
    path = tmp_path / "platemap.csv"
    rows[["plate", "well", "site", "compound", "concentration", "label",
          "path_DAPI"]].to_csv(path, index=False)
    return path


def _loaddata(index: pd.DataFrame, tmp_path: Path) -> Path:
    paths = index["Path_DAPI"].map(Path)
    table = pd.DataFrame({sc.PLATE: index[sc.PLATE], sc.WELL: index[sc.WELL],
                          "FileName_DAPI": paths.map(lambda p: p.name),
                          "PathName_DAPI": paths.map(lambda p: str(p.parent)),
                          sc.COMPOUND: index[sc.COMPOUND],
                          sc.CONCENTRATION: index[sc.CONCENTRATION]})
    path = tmp_path / "load_data.csv"
    table.to_csv(path, index=False)
    return path
