"""Shared fixtures: small SYNTHETIC plates in the real layouts, made once per test session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021

# ------------------------------------------------------------------ precision
# `precision: auto` is bf16 on a CPU with native bf16 and fp32 elsewhere (runtime.CPU_AUTO), so
# a test that inherits it checks a different program on different machines. Every network a
# test runs in this process states its precision (fp32 for numbers compared across machines;
# bf16 where the bf16 path is under test); a test about `auto` itself is marked
# `auto_precision`. Runs started as subprocesses state it in their config or options.
_AUTO_ALLOWED = [False]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "auto_precision: the test runs a network with "
                            "precision auto on purpose")
    _share_the_cores()


# ------------------------------------------------------------------ cores
# The suite runs on pytest-xdist workers, a test file to each (pyproject's addopts). Each
# worker computes with its share of the cores, and so do the runs it starts as subprocesses
# (OMP_NUM_THREADS is inherited): a resumed subprocess run is compared with an in-process run
# of the same thread count, and two workers do not fight over the same cores.
def _share_the_cores() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if "PYTEST_XDIST_WORKER" not in os.environ or workers < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _tests_state_their_precision() -> Iterator[None]:
    from cellmorph import runtime

    original = runtime.auto_precision  # what `precision: auto` resolves through

    def stated(*args, **kwargs):
        if not _AUTO_ALLOWED[0]:
            raise AssertionError("a test ran a network with precision 'auto' (bf16 or fp32 by "
                                 "CPU): state precision='fp32' (or 'bf16'), or mark the test "
                                 "auto_precision")
        return original(*args, **kwargs)

    runtime.auto_precision = stated
    yield
    runtime.auto_precision = original


@pytest.fixture(autouse=True)
def _auto_precision_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    _AUTO_ALLOWED[0] = request.node.get_closest_marker("auto_precision") is not None
    yield
    _AUTO_ALLOWED[0] = False


@pytest.fixture(scope="session")
def real014_index(tmp_path_factory: pytest.TempPathFactory):
    """The index of the four real BBBC014 fields in tests/data/bbbc014 (two wells, DAPI and
    FITC), linked into BBBC014's own folder layout."""
    from cellmorph.datasets.bbbc014 import IMAGE_FOLDER, index_bbbc014

    root = tmp_path_factory.mktemp("real014")
    (root / IMAGE_FOLDER).mkdir()
    for f in (Path(__file__).parent / "data" / "bbbc014").glob("*.tif"):
        (root / IMAGE_FOLDER / f.name).symlink_to(f)
    return index_bbbc014(root)


@pytest.fixture(scope="session")
def synth021(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's default SYNTHETIC BBBC021 selection (4 MoAs, 13 compounds, 1 site)."""
    root = tmp_path_factory.mktemp("synth021")
    synthesize_bbbc021(root, progress=False)
    return root


@pytest.fixture(scope="session")
def synth021_index(synth021: Path):
    """The MoA-subset index of :func:`synth021`."""
    return index_bbbc021(synth021, moa_subset=True, image_csv=synth021 / "BBBC021_v1_image.csv")


@pytest.fixture(scope="session")
def tiny021(tiny021_all: Path) -> Path:
    """A very small SYNTHETIC BBBC021 set (2 MoAs, 6 compounds, 64x80 fields) and its index,
    for tests of run folders and edge cases where the numbers do not matter (a test module
    may narrow it to :func:`tiny021_six`)."""
    return tiny021_all


@pytest.fixture(scope="session")
def tiny021_all(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The set behind :func:`tiny021`, made once (18 plates of 3 fields)."""
    from cellmorph.atomic import write_parquet

    root = tmp_path_factory.mktemp("tiny021")
    synthesize_bbbc021(root / "images", moas=["Actin disruptors", "Protein synthesis"],
                       size=(64, 80), max_concentrations=1, controls_per_plate=2, progress=False)
    write_parquet(index_bbbc021(root / "images", moa_subset=True), root / "index.parquet")
    return root / "index.parquet"


@pytest.fixture(scope="session")
def tiny021_six(tiny021_all: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny021` on six of its 18 plates, one per compound (LOCO folds stay valid), its
    index beside a link to the same images: for tests of run folders and executors, where
    what matters is what happens to plates, not how many there are."""
    import pandas as pd

    from cellmorph.atomic import write_parquet

    root = tmp_path_factory.mktemp("tiny021_six")
    index = pd.read_parquet(tiny021_all)
    treated = index[index["Metadata_Role"] != "control"]
    plates = treated.groupby("Metadata_Compound")["Metadata_Plate"].min()
    (root / "images").symlink_to(tiny021_all.parent / "images")
    return write_parquet(index[index["Metadata_Plate"].isin(plates)], root / "index.parquet")


@pytest.fixture
def start_cli() -> Callable[..., subprocess.Popen]:
    """Starts ``cellmorph ARGS`` as a process that Ctrl-C (SIGINT) interrupts as in a terminal,
    however the test run itself was started."""
    def start(*args: str, **popen: object) -> subprocess.Popen:
        # A suite started as a background job of a non-interactive shell (`.ci/run &`)
        # inherits SIGINT ignored, and so would the CLI: Python then never raises
        # KeyboardInterrupt and the run finishes. exec() keeps an ignored signal ignored but
        # resets a handled one to the default, so SIGINT is handled here while starting it.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return subprocess.Popen([sys.executable, "-m", "cellmorph.cli", *args], **popen)
        finally:
            signal.signal(signal.SIGINT, previous)
    return start


@pytest.fixture
def wait_for_files() -> Callable[..., None]:
    """Waits until ``count`` files matching ``pattern`` exist under ``folder`` or ``proc`` has
    ended (the moment to interrupt a run mid-way)."""
    def wait(proc: subprocess.Popen, folder: Path, pattern: str, count: int, *,
             timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = len(list(folder.glob(pattern))) if folder.exists() else 0
            if found >= count or proc.poll() is not None:
                return
            time.sleep(0.05)
    return wait
