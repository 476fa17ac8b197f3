"""``cellmorph demo``: the whole pipeline on a small SYNTHETIC BBBC021 set."""

from __future__ import annotations

from pathlib import Path

import typer

from cellmorph.atomic import write_parquet
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.datasets.index import format_summary, summarize
from cellmorph.synth.bbbc021 import synthesize_bbbc021


def run_demo(out: Path) -> dict[str, Path]:
    """Synthesise plates, index them and print the summary; returns the paths written."""
    out = Path(out)
    images = out / "synthetic-bbbc021"
    typer.echo(f"[1/2] synthesising a SYNTHETIC BBBC021 set in {images}")
    synthesize_bbbc021(images)
    typer.echo("[2/2] indexing it with the MoA benchmark rules")
    index = index_bbbc021(images, moa_subset=True, image_csv=images / "BBBC021_v1_image.csv")
    index_path = write_parquet(index, out / "index.parquet")
    typer.echo(format_summary(summarize(index)))
    return {"images": images, "index": index_path}
