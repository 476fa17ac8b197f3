"""The report: one self-contained HTML page for a profiling run, a fine-tuning run, both, and
a compare-init folder, checked in a real browser (headless Chromium) where one is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.atomic import write_parquet
from cellmorph.errors import CellmorphError
from cellmorph.reporting.plots import plot_bars

SMALL = {"grid": [1, 1], "tile_size": 48, "illumination": False, "drop_empty": False}
SECTIONS = ("calls", "overview", "data", "accuracy", "treatments", "conformal", "profiling", "map",
            "explain")


HIDDEN = "latrunculin B"


@pytest.fixture(scope="module")
def runs(tiny021: Path, tmp_path_factory) -> Path:
    """A folder holding a profiling run and a two-seed fine-tuning run (with explain)."""
    root = tmp_path_factory.mktemp("report")
    index = pd.read_parquet(tiny021)  # the profiles' screen has an unknown: it gets a call
    hidden = index[sc.COMPOUND] == HIDDEN
    index.loc[hidden, sc.ROLE], index.loc[hidden, sc.MOA] = sc.ROLE_UNLABELLED, None
    write_parquet(index, root / "index.parquet")
    profiles = api.profile(index=root / "index.parquet", output=root / "profiles",
                           preprocess=SMALL, precision="fp32", progress=False)
    api.evaluate(profiles, output=root / "profiles" / "evaluation", map_null_size=200)
    api.train(index=tiny021, output=root / "loco", model="tf_efficientnet_lite0",
              preset="fast", epochs=2, seeds=[0, 1], progress=False, precision="fp32",
              folds=["emetine", "cytochalasin B", "anisomycin", "cytochalasin D"],
              preprocess=SMALL)
    api.explain(root / "loco", output=root / "loco" / "explain", size=48, steps=8, filters=1,
                crops_per_moa=1, progress=False)
    return root


def test_report_of_profiling_and_training_runs(runs: Path) -> None:
    page = api.report(runs, output=runs / "report.html")
    assert page.path == runs / "report.html"
    html = page.path.read_text()
    assert html == page.html
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert 'id="synthetic-warning"' in html
    assert "precision actually used" in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch: offline
    n_images = len(re.findall(r'<img src="data:image/png;base64,', html))
    assert n_images >= 8
    figures = sorted(p.name for p in (runs / "figures").glob("*.png"))
    for name in ("confusion.png", "epochs.png", "conformal_training.png",
                 "conformal_profiles.png", "map_moa.png", "gradcam.png", "actmax.png",
                 "reliability.png"):
        assert name in figures, name  # the same figures beside the page, as PNG


@pytest.mark.parametrize("kind", ["profiles", "loco"])
def test_report_of_one_run(runs: Path, kind: str, tmp_path: Path) -> None:
    page = api.report(runs / kind, output=tmp_path / "r.html")
    html = page.path.read_text()
    assert ('id="profiling"' in html) == (kind == "profiles")
    assert ('id="accuracy"' in html) == (kind == "loco")
    # The page opens on the calls: the profiles' screen has an unknown, the LOCO run's has
    # none and says so in one line.
    calls = html[html.index('<section id="calls">'):html.index('<section id="overview">')]
    if kind == "profiles":
        assert 'id="calls-table"' in calls and HIDDEN in calls
        # A field of the unknown beside one of its nearest reference, read from the images.
        assert calls.count('<img class="thumb" src="data:image/png;base64,') == 2
    else:
        assert 'id="calls-note"' in calls and "No unlabelled treatments" in calls


def test_report_without_an_output_writes_nothing(runs: Path, tmp_path: Path) -> None:
    """The write rule: no output, no files; the page comes back in memory for a notebook."""
    source = runs / "profiles"
    before = sorted(p for p in source.rglob("*"))
    page = api.report(source)
    assert page.path is None and 'id="profiling"' in page.html
    assert sorted(p for p in source.rglob("*")) == before
    assert page._repr_html_().startswith("<iframe srcdoc=") and "in memory" in repr(page)


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(CellmorphError, match="not found"):
        api.report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CellmorphError, match="holds no cellmorph run"):
        api.report(tmp_path / "empty")


def test_plots_say_synthetic_on_their_face(tmp_path: Path, monkeypatch) -> None:
    seen = []
    from cellmorph.reporting import plots

    monkeypatch.setattr(plots, "stamp_synthetic", lambda fig: seen.append(fig))
    plot_bars({"a": 0.5}, "t", "y", tmp_path / "a.png", synthetic=True)
    plot_bars({"a": 0.5}, "t", "y", tmp_path / "b.png")
    assert len(seen) == 1


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (the Debian package "
                    "'chromium'; .ci/run installs it), so the page cannot be checked in a "
                    "real browser here")
def test_report_in_a_real_browser(runs: Path) -> None:
    page = api.report(runs, output=runs / "report.html").path
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={runs / 'chromium-profile'}"]
    shot = runs / "report-screenshot.png"  # kept in the test's output folder
    subprocess.run([*flags, "--window-size=1280,6000", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 50_000
    dom = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ready="yes"' in body  # the page's script ran
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    assert images >= 8 and loaded == images  # every embedded figure decoded
    for section in SECTIONS:
        assert f'id="{section}"' in dom, section
    first = re.search(r'<section id="([a-z]+)"', dom).group(1)
    assert first == "calls"  # the page leads with the unknowns' calls
    table = re.search(r'<table class="sortable" id="calls-table">(.*?)</table>', dom, re.S)
    assert HIDDEN in table.group(1)
