"""The API as a notebook meets it: short reprs and HTML tables, progress bars in a Jupyter
kernel, INFO lines once logging is on, a report shown inline without writing a file."""

from __future__ import annotations

import io
import logging
import sys
import types
from pathlib import Path

import pytest

import cellmorph
from cellmorph import log


@pytest.fixture(scope="module")
def evaluation():
    return cellmorph.evaluate("ljosa2013", map=False, novelty=False)


def test_reprs_fit_on_a_screen_and_tables_show_as_html(evaluation) -> None:
    text = repr(evaluation)
    assert len(text) < 1000 and "<DataFrame 596 rows x 525 columns>" in text
    assert "nn=[4 x NNResult]" in text and "conformal=<ConformalResult>" in text
    html = evaluation._repr_html_()
    assert "<table" in html and "NSC" in html and "cosine" in html
    assert len(repr(evaluation.conformal)) < 1000
    assert list(evaluation.conformal.summary_table()["confidence"]) == [0.8, 0.9, 0.95]


def test_progress_bars_show_in_a_jupyter_kernel(monkeypatch) -> None:
    shell = type("ZMQInteractiveShell", (), {})()
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert log.in_notebook()
    with log.progress(range(3), file=io.StringIO()) as bar:
        assert bar.disable is False  # stderr is no terminal in a kernel: shown all the same
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    assert not log.in_notebook()


def test_info_lines_reach_a_handler_the_user_adds(tiny021: Path, tmp_path: Path) -> None:
    """No handler of the library's own; one a notebook adds (basicConfig) sees INFO lines."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("cellmorph")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        cellmorph.profile(index=tiny021, output=tmp_path / "p", progress=False, precision="fp32",
                          preprocess={"grid": [1, 1], "tile_size": 32, "drop_empty": False})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert any("profile run on" in r.getMessage() for r in records)
