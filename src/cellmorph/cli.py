"""The ``cellmorph`` command: a thin typer layer over :mod:`cellmorph.api`.

Every command turns a :class:`~cellmorph.errors.CellmorphError` into one ``error:`` line and
exit code 2; usage errors also exit 2 with a hint; ``--debug`` shows the traceback instead.
``--quiet`` keeps only warnings and errors, ``--verbose`` adds detail. These three are the
root command's options; :func:`main` lifts them to the front wherever they stand on the line,
so ``cellmorph train cfg.yaml -q`` works as ``cellmorph -q train cfg.yaml`` does.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from cellmorph.config import ProfileConfig, RunConfig, TrainConfig, field_help
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.needs import NEEDS
from cellmorph.log import set_progress

app = typer.Typer(
    help="Mechanism-of-action answers from high-content screens with pretrained networks.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
index_app = typer.Typer(help="Build a field-of-view index (Parquet) of a screen.",
                        no_args_is_help=True, rich_markup_mode=None)
synth_app = typer.Typer(help="Write SYNTHETIC plates in a real dataset layout (demos, tests).",
                        no_args_is_help=True, rich_markup_mode=None)
download_app = typer.Typer(help="Download public datasets.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(index_app, name="index")
app.add_typer(synth_app, name="synth")
app.add_typer(download_app, name="download")

GLOBAL_FLAGS = ("--debug", "--quiet", "-q", "--verbose", "-v")
Overwrite = Annotated[bool, typer.Option(
    "--overwrite/--resume",
    help="--resume (the default) continues a run folder made with the same configuration and "
         "refuses one made with another; --overwrite deletes that folder's results and starts "
         "afresh.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cellmorph {metadata.version('cellmorph')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no "
                                        "progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail in the "
                                          "log.")] = False,
) -> None:
    """cellmorph: profile, evaluate and fine-tune on cell-painting-like screens.

    --debug, --quiet and --verbose may stand anywhere on the line."""
    configure_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    set_progress(not quiet)


def _opt(model: type, name: str, *flags: str) -> typer.models.OptionInfo:
    """An option whose help is the config field's description and default."""
    return typer.Option(*flags, help=field_help(model, name), show_default=False)


def _parse_size(size: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CellmorphError(f"--size {size!r}: write it as HEIGHTxWIDTH, e.g. 128x160") from None
    return h, w  # the bounds are synth.render.check_size's


def _index(build: str, output: Path, **options: object) -> None:
    """The one body of the index commands: build with the API, write, say what it holds."""
    import cellmorph.api as api

    index = getattr(api, build)(output=output, **options)
    if logging.getLogger("cellmorph").getEffectiveLevel() <= logging.INFO:  # not with -q
        typer.echo(api.describe(index))
        typer.echo(f"index: {len(index)} fields of view -> {output}")


# ---------------------------------------------------------------- index
@index_app.command("bbbc021")
def index_bbbc021_cmd(
    root: Annotated[Path, typer.Argument(
        metavar="ROOT", help="Folder with the unpacked per-plate zips.")],
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
) -> None:
    """Index BBBC021: one row per field of view with plate, week, well, site, MoA and paths."""
    _index("index_bbbc021", output or root / "index.parquet", root=root, moa_subset=moa_subset,
           plates=plate, image_csv=image_csv, moa_csv=moa_csv, check_files=check_files)


@index_app.command("bbbc014")
def index_bbbc014_cmd(
    root: Annotated[Path, typer.Argument(
        metavar="ROOT", help="Folder holding BBBC014_v1_images/.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Index file "
                                                 "(default ROOT/index.parquet).")] = None,
    pattern: Annotated[str | None, typer.Option(help="File-name regex with groups channel, "
                                                "row, column.")] = None,
) -> None:
    """Index BBBC014: 96 wells, DAPI + FITC; 4 highest doses positive, 4 lowest negative."""
    _index("index_bbbc014", output or root / "index.parquet", root=root,
           pattern=pattern)


@index_app.command("platemap")
def index_platemap_cmd(
    platemap: Annotated[Path, typer.Argument(
        metavar="PLATEMAP", help="Plate-map CSV: plate, well, site, "
                                             "path_<stain>..., compound, concentration[, label, "
                                             "batch, replicate].")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Index file (default "
                                                 "PLATEMAP.index.parquet).")] = None,
    root: Annotated[Path | None, typer.Option(help="Base of relative paths (default: the CSV's "
                                              "folder).")] = None,
    control: Annotated[str, typer.Option(help="Compound name of the negative control.")] = "DMSO",
    check_files: Annotated[bool, typer.Option(help="Check that every image file exists.")] = True,
) -> None:
    """Index your own screen from a plate-map CSV, with any number of stains."""
    _index("index_platemap", output or platemap.with_suffix(".index.parquet"), path=platemap,
           root=root, control=control, check_files=check_files)


@index_app.command("loaddata")
def index_loaddata_cmd(
    loaddata: Annotated[Path, typer.Argument(
        metavar="LOADDATA", help="CellProfiler LoadData CSV: Metadata_Plate, "
                                             "Metadata_Well, Metadata_Site, FileName_<Ch>, "
                                             "PathName_<Ch> ... (JUMP's load_data_csv too).")],
    treatments: Annotated[Path | None, typer.Option(help="Treatment table joined on plate "
                                                    "and well (or well alone).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Index file (default "
                                                 "LOADDATA.index.parquet).")] = None,
    root: Annotated[Path | None, typer.Option(help="Base of relative PathName_ folders "
                                              "(default: the CSV's folder).")] = None,
    control: Annotated[str, typer.Option(help="Compound name of the negative control.")] = "DMSO",
    compound_column: Annotated[str | None, typer.Option(help="Treatment column (default: "
                                                        "Metadata_Compound or a known alias).")]
    = None,
    concentration_column: Annotated[str | None, typer.Option(help="Concentration column.")]
    = None,
    label_column: Annotated[str | None, typer.Option(help="MoA label column.")] = None,
    batch_column: Annotated[str | None, typer.Option(help="Batch column.")] = None,
    check_files: Annotated[bool, typer.Option(help="Check that every image file exists.")] = True,
) -> None:
    """Index a screen from a CellProfiler LoadData CSV (with an optional treatment table)."""
    _index("index_loaddata", output or loaddata.with_suffix(".index.parquet"), path=loaddata,
           treatments=treatments, root=root, control=control, check_files=check_files,
           compound=compound_column, concentration=concentration_column, label=label_column,
           batch=batch_column)


# ---------------------------------------------------------------- synth
@synth_app.command("bbbc021")
def synth_bbbc021_cmd(
    out: Annotated[Path, typer.Argument(
        metavar="OUT", help="Output folder (plate folders, metadata CSVs).")],
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
) -> None:
    """Write SYNTHETIC BBBC021 plates: real file names and layout, procedurally drawn cells."""
    from cellmorph.api import synthesize_bbbc021

    chosen = {"moas": "all" if moa == ["all"] else moa} if moa else {}  # else the default 4
    rows = synthesize_bbbc021(out, **chosen, compounds=compound, plates=plate, sites=sites,
                              max_concentrations=max_concentrations or None,
                              controls_per_plate=controls_per_plate or None,
                              size=_parse_size(size), seed=seed)
    typer.echo(f"SYNTHETIC BBBC021: {len(rows)} fields x 3 stains in "
               f"{rows['Image_Metadata_Plate_DAPI'].nunique()} plates -> {out}")


@synth_app.command("bbbc014")
def synth_bbbc014_cmd(
    out: Annotated[Path, typer.Argument(
        metavar="OUT", help="Output folder.")],
    size: Annotated[str, typer.Option(help="HEIGHTxWIDTH; the real images are 1024x1360.")]
    = "256x340",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same pixels).")] = 0,
) -> None:
    """Write a SYNTHETIC BBBC014 plate (96 wells, DAPI + FITC, 8-bit BMP)."""
    from cellmorph.api import synthesize_bbbc014

    folder = synthesize_bbbc014(out, size=_parse_size(size), seed=seed)
    typer.echo(f"SYNTHETIC BBBC014: 96 wells x 2 stains -> {folder}")


# ---------------------------------------------------------------- download
@download_app.command("bbbc021")
def download_bbbc021_cmd(
    root: Annotated[Path, typer.Argument(
        metavar="ROOT", help="Where to put the plate folders.")],
    plate: Annotated[list[str] | None, typer.Option("--plate", help="Only these plates "
                                                    "(repeat); default all 55.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Mirror of the BBBC021 files.")] = None,
    keep_zips: Annotated[bool, typer.Option(help="Keep the zips after unpacking.")] = False,
) -> None:
    """Download BBBC021 per-plate zips and metadata; resumes, verifies, extracts safely."""
    from cellmorph.api import download_bbbc021

    folders = download_bbbc021(root, plate, keep_zips=keep_zips,
                               **({"base_url": base_url} if base_url else {}))
    typer.echo(f"{len(folders)} plate folder(s) ready under {root}; next: "
               f"cellmorph index bbbc021 {root} --moa-subset")


@download_app.command("bbbc014")
def download_bbbc014_cmd(
    root: Annotated[Path, typer.Argument(
        metavar="ROOT", help="Where to put BBBC014_v1_images/ and the plate "
                                         "map.")],
    base_url: Annotated[str | None, typer.Option(help="Mirror of the BBBC014 files.")] = None,
    keep_zip: Annotated[bool, typer.Option(help="Keep the zip after unpacking.")] = False,
) -> None:
    """Download BBBC014 images and plate map (concentrations); resumes, verifies, extracts
    safely."""
    from cellmorph.api import download_bbbc014

    folder = download_bbbc014(root, keep_zip=keep_zip,
                              **({"base_url": base_url} if base_url else {}))
    typer.echo(f"images ready in {folder}; next: cellmorph index bbbc014 {root}")


# ---------------------------------------------------------------- profile / evaluate
_P, _T = ProfileConfig, TrainConfig
# The options of every run (RunConfig's fields). index, output and cache_dir are taken as
# text: typer would turn an empty argument (an unset shell variable) into Path('.'), where
# the config refuses it with one line.
IndexOpt = Annotated[str | None, _opt(RunConfig, "index", "--index")]
OutputOpt = Annotated[str | None, _opt(RunConfig, "output", "-o", "--output")]
WeightsOpt = Annotated[str | None, _opt(RunConfig, "weights", "--weights")]
DeviceOpt = Annotated[str | None, _opt(RunConfig, "device", "--device")]
PrecisionOpt = Annotated[str | None, _opt(RunConfig, "precision", "--precision")]
RayAddressOpt = Annotated[str | None, _opt(RunConfig, "ray_address", "--ray-address")]
CacheDirOpt = Annotated[str | None, _opt(RunConfig, "cache_dir", "--cache-dir")]


@app.command("profile")
def profile_cmd(
    config: Annotated[Path | None, typer.Argument(
        metavar="CONFIG", help="YAML config (see configs/ and "
                                                  "`cellmorph config-reference`).")] = None,
    index: IndexOpt = None,
    output: OutputOpt = None,
    model: Annotated[str | None, _opt(_P, "model", "--model")] = None,
    weights: WeightsOpt = None,
    channel_mode: Annotated[str | None, _opt(_P, "channel_mode", "--channel-mode")] = None,
    preprocess: Annotated[str | None, _opt(_P, "preprocess", "--preprocess")] = None,
    batch_size: Annotated[int | None, _opt(_P, "batch_size", "--batch-size")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    h5ad: Annotated[bool, typer.Option("--h5ad", help="Also write the profiles as AnnData "
                                       "(profiles_<level>.h5ad) for scverse tools.")] = False,
    executor: Annotated[str | None, _opt(_P, "executor", "--executor")] = None,
    ray_address: RayAddressOpt = None,
    cache_dir: CacheDirOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Images -> deep-feature profiles (image, well and treatment level) with a frozen network."""
    from cellmorph.api import profile

    result = profile(config, index=index, output=output, model=model, weights=weights,
                     channel_mode=channel_mode, preprocess=preprocess, batch_size=batch_size,
                     device=device, precision=precision, h5ad=h5ad, executor=executor,
                     ray_address=ray_address, cache_dir=cache_dir, overwrite=overwrite)
    out = result.config.output
    from cellmorph.reporting.text import format_cells, format_qc

    if format_cells(result.images):
        typer.echo(f"single cells: {format_cells(result.images)}")
    if result.qc is not None:
        typer.echo(format_qc(result.qc))
    typer.echo(f"profiles: {out / 'profiles_well.parquet'} (wells), "
               f"{out / 'profiles_treatment.parquet'} (treatments); config saved as "
               f"{out / 'config.yaml'}")


def _evaluation_folder(profiles: str) -> Path:
    """Where ``cellmorph evaluate`` writes by default: beside the profiles."""
    if profiles == "ljosa2013":
        return Path("evaluation-ljosa2013")
    src = Path(profiles)
    return (src if src.is_dir() else src.parent) / "evaluation"


@app.command("evaluate", help=(
    "Profiles -> NSC/NSCB 1-NN MoA accuracy, mAP (copairs), conformal sets, novelty, each "
    "well's distance to the controls and each compound's dose series; several sets of "
    "profiles (frozen, weakly supervised, fold models ...) -> one comparison table. Each part "
    "is computed where the screen allows it, and what was skipped is listed with why. What "
    "each part needs:\n\n" + "\n\n".join(f"{part}: {need}" for part, need in NEEDS.items())))
def evaluate_cmd(
    profiles: Annotated[list[str], typer.Argument(metavar="PROFILES",
        help="Well-level profiles (.parquet/.csv), a `cellmorph profile` or `cellmorph embed` "
             "folder, or 'ljosa2013' for the bundled CellProfiler profiles; several: each "
             "evaluated alike, then one table of all.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML EvaluateConfig.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where metrics and "
                                                "plots go (default: beside the profiles; "
                                                "with several, each beside its own).")]
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
    positive_control: Annotated[list[str] | None, typer.Option(
        "--positive-control", help="A compound whose wells are positive controls (repeat "
        "for several): Z' against DMSO in the plate views.")] = None,
) -> None:
    from cellmorph.api import describe, evaluate

    if output is not None and len(profiles) > 1:
        raise CellmorphError("-o: give it with one set of profiles; several are each "
                             "evaluated into their own folder")
    outputs = {source: output or _evaluation_folder(source) for source in profiles}
    if len(set(outputs.values())) < len(outputs):
        raise CellmorphError("two of these profiles would be evaluated into the same folder "
                             "(files side by side); evaluate them one at a time with -o")
    results = {}
    for source, out in outputs.items():
        results[source] = evaluate(source, config, output=out, index=index,
                                   normalize=normalize, normalize_by=normalize_by,
                                   sphering=sphering, pca_components=pca, map=map_,
                                   positive_controls=positive_control or None)
        if len(profiles) == 1:
            typer.echo(describe(results[source]))
        typer.echo(f"metrics, tables and plots -> {out}")
    if len(profiles) > 1:
        typer.echo(describe(results))


@app.command("translocation")
def translocation_cmd(
    index: Annotated[Path, typer.Argument(
        metavar="INDEX", help="Index from `cellmorph index` (e.g. BBBC014).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for the tables, "
                                                "scores and plot (default: beside the "
                                                "index).")] = None,
    nuclei: Annotated[str, typer.Option(help="The stain that shows nuclei only.")] = "DAPI",
    reporter: Annotated[str, typer.Option(help="The stain whose location changes.")] = "FITC",
    ring: Annotated[int, typer.Option(min=1, max=100, help="Cytoplasm ring width, pixels.")] = 6,
    positive: Annotated[str | None, typer.Option(help="Label of translocated wells (default: "
                                                 "BBBC014's 'translocation').")] = None,
) -> None:
    """Nuclear/cytoplasmic reporter ratio per field and well: the classic translocation
    readout, a baseline with no learning."""
    from cellmorph.api import describe, translocation

    out = output or index.parent / "translocation"
    result = translocation(index, output=out, nuclei=nuclei, reporter=reporter, ring=ring,
                           positive=positive)
    typer.echo(describe(result))
    typer.echo(f"tables, scores and dose-response plot -> {out}")


@app.command("export")
def export_cmd(
    profiles: Annotated[Path, typer.Argument(
        metavar="PROFILES", help="A profile table (.parquet/.csv), or a "
                                             "run's cells/ folder (one table a plate).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .h5ad file to write "
                                         "(.parquet too for a cells/ folder).")],
) -> None:
    """Write a profile table as AnnData (.h5ad: obs = Metadata_ columns, X = features); a
    run's per-cell tables (cells/) as one .h5ad or .parquet, one plate in memory at a time."""
    from cellmorph.api import export

    path = export(profiles, output)
    typer.echo(f"{'AnnData' if path.suffix == '.h5ad' else 'Parquet'} -> {path}")


# ---------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    config: Annotated[Path | None, typer.Argument(
        metavar="CONFIG", help="YAML TrainConfig (see configs/ and "
                                                  "`cellmorph config-reference`).")] = None,
    index: IndexOpt = None,
    output: OutputOpt = None,
    model: Annotated[str | None, _opt(_T, "model", "--model")] = None,
    weights: WeightsOpt = None,
    preset: Annotated[str | None, _opt(_T, "preset", "--preset")] = None,
    preprocess: Annotated[str | None, _opt(_T, "preprocess", "--preprocess")] = None,
    epochs: Annotated[int | None, _opt(_T, "epochs", "--epochs")] = None,
    batch_size: Annotated[int | None, _opt(_T, "batch_size", "--batch-size")] = None,
    seed: Annotated[list[int] | None, _opt(_T, "seeds", "--seed")] = None,
    fold_by: Annotated[str | None, _opt(_T, "fold_by", "--fold-by")] = None,
    fold: Annotated[list[str] | None, _opt(_T, "folds", "--fold")] = None,
    freeze_stages: Annotated[str | None, _opt(_T, "freeze_stages", "--freeze-stages")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    executor: Annotated[str | None, _opt(_T, "executor", "--executor")] = None,
    ray_address: RayAddressOpt = None,
    cache_dir: CacheDirOpt = None,
    novelty: Annotated[bool | None, _opt(_T, "novelty", "--novelty/--no-novelty")] = None,
    label: Annotated[str | None, _opt(_T, "label", "--label")] = None,
    controls: Annotated[str | None, _opt(_T, "controls", "--controls")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune with leave-one-compound-out (or any group) cross-validation, or on weak labels
    (--label compound|treatment: one model per seed, for `cellmorph embed`); resumable."""
    from cellmorph.api import describe, train

    result = train(config, index=index, output=output, model=model, weights=weights,
                   preset=preset, preprocess=preprocess, epochs=epochs, batch_size=batch_size,
                   seeds=seed, fold_by=fold_by, folds=fold, freeze_stages=freeze_stages,
                   device=device, precision=precision, executor=executor,
                   ray_address=ray_address, cache_dir=cache_dir, novelty=novelty,
                   label=label, controls=controls, overwrite=overwrite)
    typer.echo(describe(result))
    typer.echo(f"run folder: {result.config.output}")


@app.command("embed")
def embed_cmd(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="A `cellmorph train` folder: weakly supervised "
                                        "(one model) or leave-one-compound-out (each "
                                        "compound by the fold model that never saw it).")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="The embedding's run "
                                               "folder (default RUN/embed).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Which seed's models (default: "
                                             "the run's first).")] = None,
    batch_size: Annotated[int | None, _opt(_P, "batch_size", "--batch-size")] = None,
    aggregate: Annotated[str | None, _opt(_P, "aggregate", "--aggregate")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    h5ad: Annotated[bool, typer.Option("--h5ad", help="Also write the profiles as AnnData "
                                       "(profiles_<level>.h5ad) for scverse tools.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """A trained network's penultimate layer -> profiles in `cellmorph profile`'s layout
    (evaluate, report and export take them as they are)."""
    from cellmorph.api import embed

    result = embed(run, output=output, seed=seed, batch_size=batch_size, aggregate=aggregate,
                   device=device, precision=precision, h5ad=h5ad, overwrite=overwrite)
    out = result.config.output
    typer.echo(f"profiles: {out / 'profiles_well.parquet'} (wells), "
               f"{out / 'profiles_treatment.parquet'} (treatments), from "
               f"{'fold models' if result.config.fold_models else result.config.weights}; "
               f"next: cellmorph evaluate {out}")


@app.command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="A `cellmorph profile` folder (or `cellmorph embed`'s) whose "
                            "screen has labelled treatments: the references; or a finished "
                            "leave-one-compound-out `cellmorph train` folder: its fold "
                            "models.")],
    index: Annotated[Path, typer.Argument(
        metavar="INDEX", help="The new screen's index (`cellmorph index ...`); stains are "
                              "matched to the run's by name.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="A new run folder: the "
                                         "screen's profiles (or its fold-model "
                                         "predictions), calls_treatment.csv and "
                                         "predict.json.")],
    batch_size: Annotated[int | None, _opt(_P, "batch_size", "--batch-size")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    overwrite: Overwrite = False,
) -> None:
    """Calls for every treated compound of a new screen (call, conformal sets, novelty,
    nearest references): profiled with a profiling run's network and preprocessing,
    normalised on its own controls, called from the run's labelled treatments; or, from a
    training run, preprocessed as it was and predicted by the fold models that never saw
    each compound."""
    from cellmorph.api import predict
    from cellmorph.reporting.text import format_screen_calls

    typer.echo(format_screen_calls(predict(run, index, output=output, batch_size=batch_size,
                                           device=device, precision=precision,
                                           overwrite=overwrite)))


@app.command("compare-init")
def compare_init_cmd(
    config: Annotated[Path, typer.Argument(
        metavar="CONFIG", help="YAML TrainConfig; run once per init.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for both runs "
                                                 "and the comparison (default: the config's "
                                                 "output).")] = None,
    epochs: Annotated[int | None, _opt(_T, "epochs", "--epochs")] = None,
    seed: Annotated[list[int] | None, _opt(_T, "seeds", "--seed")] = None,
    fold: Annotated[list[str] | None, _opt(_T, "folds", "--fold")] = None,
    keep_frozen: Annotated[bool, typer.Option(
        "--keep-frozen", help="Keep the config's frozen/cached trunk in both arms (the "
        "default, as in the paper, fine-tunes the whole network in both).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Pretrained (ImageNet) vs Xavier-initialised fine-tuning, side by side."""
    from cellmorph.api import compare_init, describe

    results = compare_init(config, output=output, epochs=epochs, seeds=seed, folds=fold,
                           whole_network=not keep_frozen, overwrite=overwrite)
    out = output or next(iter(results.values())).config.output.parent
    typer.echo(describe(results))
    typer.echo(f"plots: {out / 'compare_init.png'}")


@app.command("explain")
def explain_cmd(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="A `cellmorph train` (or profile) run folder.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for the "
                                                "figures (default RUN/explain).")] = None,
    layer: Annotated[list[str] | None, typer.Option("--layer", help="Layers to visualise "
                                                    "(repeat; default: the last two feature "
                                                    "stages).")] = None,
    filters: Annotated[int, typer.Option(min=1, max=64, help="Filters per layer.")] = 2,
    size: Annotated[int, typer.Option(min=32, max=512, help="Image size, pixels.")] = 128,
    steps: Annotated[int, typer.Option(min=1, max=5000, help="Optimisation steps.")] = 128,
    crops: Annotated[int, typer.Option(min=0, max=20, help="Grad-CAM crops per MoA.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
) -> None:
    """What the network sees: activation maximisation (pretrained beside fine-tuned) and
    Grad-CAM over example crops of each MoA."""
    from cellmorph.api import explain

    out = output or run / "explain"
    explain(run, output=out, layers=layer, filters=filters, size=size, steps=steps,
            crops_per_moa=crops, device=device)
    typer.echo(f"figures -> {out} (the report shows them)")


@app.command("report")
def report_cmd(
    source: Annotated[Path, typer.Argument(
        metavar="SOURCE", help="A run folder (profile, train, compare-init, "
                                           "the demo's) or a predictions_treatment.csv.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file (default: "
                                                "SOURCE/report.html for a run folder, "
                                                "TABLE.report.html beside a table).")] = None,
) -> None:
    """One self-contained HTML page of a run: accuracy, confusion, per-treatment table,
    conformal sets, maps, Grad-CAM; figures also as PNG beside it."""
    from cellmorph.api import report

    out = output or (source / "report.html" if source.is_dir()
                     else source.with_suffix(".report.html"))
    typer.echo(f"report -> {report(source, output=out).path}")


# ---------------------------------------------------------------- demo, reference
@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("-o", "--output", help="Demo folder.")]
    = Path("demo-output"),
    precision: PrecisionOpt = None,
) -> None:
    """Run the whole pipeline on a small SYNTHETIC BBBC021 set (no downloads needed)."""
    from cellmorph.api import describe
    from cellmorph.demo import run_demo

    demo = run_demo(out, precision=precision or "auto")
    typer.echo(describe(demo.evaluation))
    typer.echo(describe(demo.training))
    typer.echo("SYNTHETIC data: these numbers show the pipeline works, not biology.\n"
               f"Plots and tables: {demo.profiles / 'evaluation'} and {demo.training_folder}\n"
               f"Report (open it in a browser): {demo.report}")


@app.command("config-reference")
def config_reference_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the Markdown "
                                                 "here instead of printing it.")] = None,
) -> None:
    """Every key of the profile, evaluate and train config files, with its description."""
    from cellmorph.api import config_reference

    text = config_reference(output)
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"configuration reference -> {output}")


# ---------------------------------------------------------------- entry point
class CurrentStderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted, not the
    stream it was made with: a test's captured stream, a notebook's or a redirected one may
    have been closed or replaced since (logging's own ``StreamHandler`` keeps its first)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - a text stream, as logging.StreamHandler's
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # logging.StreamHandler.__init__ sets it
        pass


def configure_logging(level: int) -> None:
    """Send the library's log to stderr: INFO as plain lines, warnings prefixed."""

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = record.getMessage()
            return text if record.levelno < logging.WARNING else f"warning: {text}"

    logger = logging.getLogger("cellmorph")
    for handler in list(logger.handlers):
        if getattr(handler, "_cellmorph_cli", False):
            logger.removeHandler(handler)
    handler = CurrentStderrHandler()
    handler.setFormatter(_Format())
    handler._cellmorph_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one error line and a non-zero exit on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The root command's options, wherever they stand, go first (where typer reads them).
    argv = [a for a in argv if a in GLOBAL_FLAGS] + [a for a in argv if a not in GLOBAL_FLAGS]
    # Options are spelt as the config keys are (normalize, pycytominer's); the British
    # spelling is accepted where users type it, as in config files (config._SPELLINGS).
    argv = [a.replace("normalise", "normalize") if a.startswith("--") else a for a in argv]
    debug = "--debug" in argv
    # SIGTERM (a scheduler, `kill`) stops a run like Ctrl-C: finished parts stay, exit 130.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = app(args=argv, prog_name="cellmorph", standalone_mode=False)
    except CellmorphError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as exc:  # typer's (vendored) click: usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":
            ctx = getattr(exc, "ctx", None)
            typer.echo(ctx.get_help() if ctx else "", err=True)
            typer.echo("\nno command given; try 'cellmorph --help' or 'cellmorph demo'",
                       err=True)
            return 2
        exc.show()
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {type(exc).__name__}: {exc} (an internal error; rerun with --debug "
                   "and report it)", err=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code == 130:  # typer turns KeyboardInterrupt into this exit code
        return _interrupted()
    return code if isinstance(code, int) else 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interrupted() -> int:
    typer.echo("interrupted; outputs written so far are complete, rerun to resume", err=True)
    return 130


if __name__ == "__main__":
    sys.exit(main())
