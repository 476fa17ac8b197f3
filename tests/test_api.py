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
from cellmorph.datasets import bbbc021
from cellmorph.evaluation import pipeline as evaluation_pipeline
from cellmorph.synth.bbbc021 import synthesize_bbbc021

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


@pytest.mark.parametrize("module", [api, bbbc021, evaluation_pipeline],
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


def test_index_dataframe_and_root_metadata(tiny_index, tmp_path) -> None:
    # ROOT's own metadata CSVs are used, exactly as on the command line.
    assert set(tiny_index[sc.PLATE]) <= set(bbbc021.read_image_metadata()[
        "Image_Metadata_Plate_DAPI"])
    assert sc.treatments(tiny_index)[sc.COMPOUND].nunique() < 38
    # A DataFrame is accepted as the index and saved with the run.
    result = cellmorph.profile(index=tiny_index, output=tmp_path / "p", progress=False,
                               preprocess={"grid": [1, 1], "tile_size": 32,
                                           "drop_empty": False})
    assert (tmp_path / "p" / "index.parquet").is_file()
    assert len(result.wells) == tiny_index[sc.WELL_KEYS].drop_duplicates().shape[0]
    assert (result.wells[sc.COUNT] == 1).all()  # one profiled image a well
    assert (result.treatments[sc.COUNT] >= 1).all()  # wells of a treatment


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
