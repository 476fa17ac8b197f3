"""The ``cellmorph`` command: a thin typer layer over the library.

Every command turns a :class:`~cellmorph.errors.CellmorphError` into one ``error:`` line and a
non-zero exit; ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer

from cellmorph.errors import CellmorphError

app = typer.Typer(
    help="Mechanism-of-action answers from high-content screens with pretrained networks.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
index_app = typer.Typer(help="Build a field-of-view index (Parquet) of a screen.",
                        no_args_is_help=True)
synth_app = typer.Typer(help="Write SYNTHETIC plates in a real dataset layout (demos, tests).",
                        no_args_is_help=True)
download_app = typer.Typer(help="Download public datasets.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(synth_app, name="synth")
app.add_typer(download_app, name="download")

Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


@app.callback()
def _root(debug: Debug = False) -> None:
    """cellmorph: profile, evaluate and fine-tune on cell-painting-like screens."""


def _parse_size(size: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CellmorphError(f"--size {size!r}: write it as HEIGHTxWIDTH, e.g. 128x160") from None
    if h < 32 or w < 32:
        raise CellmorphError(f"--size {size}: images must be at least 32x32")
    return h, w


def _echo_index(df, out: Path, note: str = "") -> None:
    from cellmorph.datasets.index import format_summary, summarize

    typer.echo(format_summary(summarize(df)))
    typer.echo(f"index: {len(df)} fields of view -> {out}{note}")


# ---------------------------------------------------------------- index
@index_app.command("bbbc021")
def index_bbbc021_cmd(
    root: Annotated[Path, typer.Argument(help="Folder with the unpacked per-plate zips.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Index file "
                                                 "(default ROOT/index.parquet).")] = None,
    moa_subset: Annotated[bool, typer.Option("--moa-subset", help="Keep the MoA benchmark "
                                             "(103 treatments, taxol rule) and its DMSO.")] = False,
    plate: Annotated[list[str] | None, typer.Option("--plate", help="Only these plates.")] = None,
    image_csv: Annotated[Path | None, typer.Option(help="BBBC021_v1_image.csv (default: "
                                                   "ROOT's copy, else the bundled one).")] = None,
    moa_csv: Annotated[Path | None, typer.Option(help="BBBC021_v1_moa.csv (default: "
                                                 "ROOT's copy, else the bundled one).")] = None,
    check_files: Annotated[bool, typer.Option(help="Check that every image file exists.")] = True,
    debug: Debug = False,
) -> None:
    """Index BBBC021: one row per field of view with plate, week, well, site, MoA and paths."""
    from cellmorph.atomic import write_parquet
    from cellmorph.datasets.bbbc021 import index_bbbc021

    image_csv = image_csv or _local(root, "BBBC021_v1_image.csv")
    moa_csv = moa_csv or _local(root, "BBBC021_v1_moa.csv")
    df = index_bbbc021(root, moa_subset=moa_subset, plates=plate, image_csv=image_csv,
                       moa_csv=moa_csv, check_files=check_files)
    out = output or root / "index.parquet"
    write_parquet(df, out)
    _echo_index(df, out)


@index_app.command("bbbc014")
def index_bbbc014_cmd(
    root: Annotated[Path, typer.Argument(help="Folder holding BBBC014_v1_images/.")],
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    pattern: Annotated[str | None, typer.Option(help="File-name regex with groups channel, "
                                                "row, column.")] = None,
    debug: Debug = False,
) -> None:
    """Index BBBC014: 96 wells, DAPI + FITC; 4 highest doses positive, 4 lowest negative."""
    from cellmorph.atomic import write_parquet
    from cellmorph.datasets.bbbc014 import DEFAULT_LAYOUT, index_bbbc014

    layout = DEFAULT_LAYOUT.model_copy(update={"pattern": pattern}) if pattern else DEFAULT_LAYOUT
    df = index_bbbc014(root, layout)
    out = output or root / "index.parquet"
    write_parquet(df, out)
    _echo_index(df, out)


@index_app.command("platemap")
def index_platemap_cmd(
    platemap: Annotated[Path, typer.Argument(help="Plate-map CSV: plate, well, site, "
                                             "path_<stain>..., compound, concentration[, label, "
                                             "batch, replicate].")],
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    root: Annotated[Path | None, typer.Option(help="Base of relative paths (default: the CSV's "
                                              "folder).")] = None,
    control: Annotated[str, typer.Option(help="Compound name of the negative control.")] = "DMSO",
    check_files: Annotated[bool, typer.Option(help="Check that every image file exists.")] = True,
    debug: Debug = False,
) -> None:
    """Index your own screen from a plate-map CSV, with any number of stains."""
    from cellmorph.atomic import write_parquet
    from cellmorph.datasets.platemap import index_platemap

    df = index_platemap(platemap, root=root, control=control, check_files=check_files)
    out = output or platemap.with_suffix(".index.parquet")
    write_parquet(df, out)
    _echo_index(df, out)


def _local(root: Path, name: str) -> Path | None:
    return root / name if (root / name).is_file() else None


# ---------------------------------------------------------------- synth
@synth_app.command("bbbc021")
def synth_bbbc021_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder (plate folders, metadata CSVs).")],
    moa: Annotated[list[str] | None, typer.Option("--moa", help="MoAs to include (repeat); "
                                                  "default: 4 distinct MoAs; 'all' for 12.")] = None,
    compound: Annotated[list[str] | None, typer.Option("--compound", help="Only these "
                                                       "compounds (repeat).")] = None,
    plate: Annotated[list[str] | None, typer.Option("--plate", help="Only these plates.")] = None,
    sites: Annotated[int, typer.Option(min=1, max=4, help="Sites per well.")] = 1,
    max_concentrations: Annotated[int, typer.Option(min=0, help="Highest N concentrations per "
                                                    "compound (0 = all).")] = 2,
    controls_per_plate: Annotated[int, typer.Option(min=0, help="DMSO wells per plate "
                                                    "(0 = all).")] = 4,
    size: Annotated[str, typer.Option(help="HEIGHTxWIDTH; the real images are 1024x1280.")]
    = "128x160",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same pixels).")] = 0,
    debug: Debug = False,
) -> None:
    """Write SYNTHETIC BBBC021 plates: real file names and layout, procedurally drawn cells."""
    from cellmorph.synth.bbbc021 import DEFAULT_MOAS, MOA_PHENOTYPES, synthesize_bbbc021

    moas = sorted(MOA_PHENOTYPES) if moa == ["all"] else (moa or list(DEFAULT_MOAS))
    rows = synthesize_bbbc021(out, moas=moas, compounds=compound, plates=plate, sites=sites,
                              max_concentrations=max_concentrations or None,
                              controls_per_plate=controls_per_plate or None,
                              size=_parse_size(size), seed=seed)
    typer.echo(f"SYNTHETIC BBBC021: {len(rows)} fields x 3 stains in "
               f"{rows['Image_Metadata_Plate_DAPI'].nunique()} plates -> {out}")


@synth_app.command("bbbc014")
def synth_bbbc014_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    size: Annotated[str, typer.Option(help="HEIGHTxWIDTH; the real images are 1024x1360.")]
    = "256x340",
    seed: Annotated[int, typer.Option()] = 0,
    debug: Debug = False,
) -> None:
    """Write a SYNTHETIC BBBC014 plate (96 wells, DAPI + FITC, 8-bit BMP)."""
    from cellmorph.synth.bbbc014 import synthesize_bbbc014

    folder = synthesize_bbbc014(out, size=_parse_size(size), seed=seed)
    typer.echo(f"SYNTHETIC BBBC014: 96 wells x 2 stains -> {folder}")


# ---------------------------------------------------------------- download
@download_app.command("bbbc021")
def download_bbbc021_cmd(
    root: Annotated[Path, typer.Argument(help="Where to put the plate folders.")],
    plate: Annotated[list[str] | None, typer.Option("--plate", help="Only these plates "
                                                    "(repeat); default all 55.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Mirror of the BBBC021 files.")] = None,
    keep_zips: Annotated[bool, typer.Option(help="Keep the zips after unpacking.")] = False,
    debug: Debug = False,
) -> None:
    """Download BBBC021 per-plate zips and metadata; resumes, verifies, extracts safely."""
    from cellmorph.download import BBBC021_BASE_URL, download_bbbc021

    folders = download_bbbc021(root, plate, base_url=base_url or BBBC021_BASE_URL,
                               keep_zips=keep_zips)
    typer.echo(f"{len(folders)} plate folder(s) ready under {root}; next: "
               f"cellmorph index bbbc021 {root} --moa-subset")


# ---------------------------------------------------------------- profile / evaluate
def _config(path: Path | None, model, overrides: dict):
    """A config from a file (if any) with command-line overrides (those not None) on top."""
    from pydantic import ValidationError

    from cellmorph.config import first_error, load_config

    base = load_config(path, model).model_dump() if path else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model(**base)
    except ValidationError as exc:
        raise CellmorphError(f"{first_error(exc)} (give it in the config file or as an "
                             "option)") from None


@app.command("profile")
def profile_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config (see configs/).")] = None,
    index: Annotated[Path | None, typer.Option(help="Index from `cellmorph index`.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder.")] = None,
    model: Annotated[str | None, typer.Option(help="Any timm model name.")] = None,
    weights: Annotated[str | None, typer.Option(help="imagenet, random, xavier or a file.")]
    = None,
    channel_mode: Annotated[str | None, typer.Option(help="greyscale (per stain) or rgb.")]
    = None,
    preprocess: Annotated[str | None, typer.Option(help="Preset: pawlowski, kensert, "
                                                   "kensert-bbbc014.")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16, fp16.")] = None,
    debug: Debug = False,
) -> None:
    """Images -> deep-feature profiles (image, well and treatment level) with a frozen network."""
    from cellmorph.config import ProfileConfig
    from cellmorph.profiling.pipeline import profile_screen

    cfg = _config(config, ProfileConfig, dict(
        index=index, output=output, model=model, weights=weights, channel_mode=channel_mode,
        preprocess=preprocess, batch_size=batch_size, device=device, precision=precision))
    paths = profile_screen(cfg)
    typer.echo(f"profiles: {paths['wells']} (wells), {paths['treatments']} (treatments); "
               f"config saved as {paths['config']}")


@app.command("evaluate")
def evaluate_cmd(
    profiles: Annotated[str, typer.Argument(help="Well-level profiles (.parquet/.csv), a "
                                            "`cellmorph profile` folder, or 'ljosa2013' for "
                                            "the bundled CellProfiler profiles.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML EvaluateConfig.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where metrics and "
                                                "plots go (default: beside the profiles).")]
    = None,
    index: Annotated[Path | None, typer.Option(help="Index to annotate un-annotated profiles "
                                               "by plate and well.")] = None,
    normalize: Annotated[str | None, typer.Option(help="standardize, robust or none.")] = None,
    normalize_by: Annotated[str | None, typer.Option(help="plate, global or plate-center.")] = None,
    sphering: Annotated[bool | None, typer.Option("--sphering/--no-sphering",
                                                  help="TVN on DMSO wells.")] = None,
    pca: Annotated[int | None, typer.Option(help="PCA components (fitted on DMSO).")] = None,
    map_: Annotated[bool | None, typer.Option("--map/--no-map", help="mAP via copairs.")]
    = None,
    debug: Debug = False,
) -> None:
    """Profiles -> NSC/NSCB 1-NN MoA accuracy, mAP (copairs), confusion matrices."""
    from cellmorph.config import EvaluateConfig
    from cellmorph.datasets.index import read_index
    from cellmorph.evaluation.pipeline import evaluate_profiles, format_results
    from cellmorph.profiling.cellprofiler import LJOSA2013, read_profiles

    cfg = _config(config, EvaluateConfig, dict(normalize=normalize, normalize_by=normalize_by,
                                               sphering=sphering, pca_components=pca, map=map_))
    wells = read_profiles(profiles, annotate_with=read_index(index) if index else None)
    if output is None:
        src = Path(profiles)
        output = (Path("evaluation-ljosa2013") if profiles == LJOSA2013
                  else (src if src.is_dir() else src.parent) / "evaluation")
    results = evaluate_profiles(wells, cfg, output)
    typer.echo(format_results(results))
    typer.echo(f"metrics, tables and plots -> {output}")


# ---------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML TrainConfig (see configs/).")]
    = None,
    index: Annotated[Path | None, typer.Option(help="Index from `cellmorph index`.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder.")] = None,
    model: Annotated[str | None, typer.Option(help="Any timm model name.")] = None,
    weights: Annotated[str | None, typer.Option(help="imagenet, xavier, random or a file.")]
    = None,
    preset: Annotated[str | None, typer.Option(help="paper or fast.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Replicate seeds "
                                                   "(repeat).")] = None,
    fold: Annotated[list[str] | None, typer.Option("--fold", help="Only these folds.")] = None,
    device: Annotated[str | None, typer.Option()] = None,
    debug: Debug = False,
) -> None:
    """Fine-tune with leave-one-compound-out (or any group) cross-validation; resumable."""
    from cellmorph.config import TrainConfig
    from cellmorph.training.cv import format_summary, run_cross_validation

    cfg = _config(config, TrainConfig, dict(index=index, output=output, model=model,
                                            weights=weights, preset=preset, epochs=epochs,
                                            seeds=seed, folds=fold, device=device))
    summary = run_cross_validation(cfg)
    typer.echo(format_summary(summary))
    typer.echo(f"run folder: {cfg.output}")


@app.command("compare-init")
def compare_init_cmd(
    config: Annotated[Path, typer.Argument(help="YAML TrainConfig; run once per init.")],
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    debug: Debug = False,
) -> None:
    """Pretrained (ImageNet) vs Xavier-initialised fine-tuning, side by side."""
    from cellmorph.config import TrainConfig, load_config
    from cellmorph.training.compare import compare_initialisations

    cfg = load_config(config, TrainConfig)
    result = compare_initialisations(cfg, output or cfg.output)
    typer.echo(result["text"])


# ---------------------------------------------------------------- demo
@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("-o", "--output", help="Demo folder.")]
    = Path("demo-output"),
    debug: Debug = False,
) -> None:
    """Run the whole pipeline on a small SYNTHETIC BBBC021 set (no downloads needed)."""
    from cellmorph.demo import run_demo

    run_demo(out)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one error line and a non-zero exit on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        app(args=argv, prog_name="cellmorph", standalone_mode=False)
    except CellmorphError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 130
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted; outputs written so far are complete, rerun to resume", err=True)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
