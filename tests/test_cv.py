"""Leave-one-compound-out fine-tuning on a SYNTHETIC BBBC021 set, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellmorph import schema as sc
from cellmorph.api import compare_init, train
from cellmorph.atomic import write_parquet
from cellmorph.config import PreprocessConfig, TrainConfig, save_config
from cellmorph.datasets.bbbc014 import index_bbbc014
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.cv_scores import CVResult
from cellmorph.synth.bbbc014_synthetic import synthesize_bbbc014
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021
from cellmorph.training.fold_jobs import fold_dir

MOAS = ["Actin disruptors", "Microtubule stabilizers", "Protein synthesis"]
# The paper's preprocessing, scaled to small synthetic fields: 2x2 crops, 64 px input.
SMALL = PreprocessConfig(illumination=False, anscombe=True, control_normalise=True,
                         rescale="image", grid=(2, 2), tile_size=64)


# Compounds whose labels the index drops, as a lab's unknowns (one from each of two MoAs):
# every fold model calls them, and the run's calls table answers for them.
HIDDEN = {"latrunculin B": "Actin disruptors", "docetaxel": "Microtubule stabilizers"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loco")
    synthesize_bbbc021(root / "images", moas=MOAS, size=(96, 120), progress=False)
    index = index_bbbc021(root / "images", moa_subset=True,
                          image_csv=root / "images" / "BBBC021_v1_image.csv")
    hidden = index[sc.COMPOUND].isin(list(HIDDEN))
    index.loc[hidden, sc.ROLE] = sc.ROLE_UNLABELLED
    index.loc[hidden, sc.MOA] = None
    write_parquet(index, root / "index.parquet")
    return root


def _cfg(data: Path, out: str, **kw) -> TrainConfig:
    base = dict(index=data / "index.parquet", output=data / out, cache_dir=data / "cache",
                model="tf_efficientnet_lite0", preset="fast", epochs=2, preprocess=SMALL,
                precision="fp32")  # the same numbers on every CPU (bf16: its own test)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def imagenet_run(data: Path) -> CVResult:
    return train(_cfg(data, "imagenet"), progress=False)


def test_loco_outputs_and_accuracy(imagenet_run: CVResult, data: Path) -> None:
    run = data / "imagenet"
    assert imagenet_run.summary.treatment_accuracy.mean >= 0.7  # chance is 1/3
    assert len(imagenet_run.summary.per_epoch_accuracy.mean) == 2
    treat = pd.read_csv(run / "seed0" / "predictions_treatment.csv")
    calibrated = [c for c in treat.columns if c.startswith("Calibrated_")]
    assert len(calibrated) == len(imagenet_run.classes)  # temperature-scaled, LOCO
    np.testing.assert_allclose(treat[calibrated].sum(axis=1), 1.0, atol=1e-6)
    assert imagenet_run.summary.calibration.ece_after >= 0
    index = pd.read_parquet(data / "index.parquet")
    labelled = index[index[sc.ROLE] == sc.ROLE_TREATMENT]
    assert sorted(treat[sc.TREATMENT]) == sorted(labelled[sc.TREATMENT].unique())
    # Per-class medians renormalised: a distribution on every row, by construction (float64),
    # whose argmax is the prediction (the bound 0.5-1.5 held here before only by luck).
    probs = treat.filter(like="Prob_")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs.columns[probs.to_numpy().argmax(axis=1)].str.removeprefix("Prob_")
            == treat["predicted"]).all()
    folds = list((run / "seed0" / "folds").iterdir())
    assert len(folds) == labelled[sc.COMPOUND].nunique() == 7
    assert all((f / "model.safetensors").is_file() for f in folds)
    for name in ("config.yaml", "metrics.json", "accuracy_per_epoch.png",
                 "seed0/confusion.png", "seed0/init.json"):
        assert (run / name).is_file(), name


def _median_over_folds(folder: Path) -> pd.DataFrame:
    """The reference: each fold's crops -> image -> well -> treatment medians renormalised,
    then the per-class median over the folds, renormalised (written out here by hand)."""
    per_fold = []
    for queries in sorted(folder.glob("*/queries.parquet")):
        crops = pd.read_parquet(queries)
        probs = [c for c in crops.columns if c.startswith("Prob_")]
        image = crops.groupby([sc.TREATMENT, sc.PLATE, sc.WELL, sc.SITE])[probs].median()
        well = image.groupby([sc.TREATMENT, sc.PLATE, sc.WELL])[probs].median()
        treatment = well.groupby(sc.TREATMENT)[probs].median()
        per_fold.append(treatment.div(treatment.sum(axis=1), axis=0))
    combined = pd.concat(per_fold).groupby(level=0).median()
    return combined.div(combined.sum(axis=1), axis=0)


def test_loco_run_calls_the_unlabelled_compounds(imagenet_run: CVResult, data: Path) -> None:
    calls = imagenet_run.calls.table
    assert sorted(calls[sc.COMPOUND].unique()) == sorted(HIDDEN)  # no control, no labelled
    reference = _median_over_folds(data / "imagenet" / "seed0" / "folds")
    assert sorted(reference.index) == sorted(calls[sc.TREATMENT])  # every fold called them
    assert len(list((data / "imagenet" / "seed0" / "folds").glob("*/queries.parquet"))) == 7
    ref = reference.loc[calls[sc.TREATMENT]]
    assert (ref.idxmax(axis=1).str.removeprefix("Prob_").to_numpy() == calls["Call_MoA"]).all()
    np.testing.assert_allclose(ref.max(axis=1), calls["Call_Probability"], atol=1e-6)
    truth = calls[sc.COMPOUND].map(HIDDEN)
    accuracy = float((calls["Call_MoA"] == truth).mean())
    covered = np.mean([m in s.split("; ") for m, s in zip(truth, calls["Set_90"], strict=True)])
    print(f"calls {accuracy:.3f} (LOCO {imagenet_run.summary.treatment_accuracy.mean:.3f}), "
          f"90 % sets cover {covered:.3f}, flagged {calls['None_Of_These'].mean():.3f} of "
          f"{len(calls)}")
    # Measured (2 epochs, fp32): docetaxel right at both doses; latrunculin B, borderline even
    # when labelled (its LOCO fold gives actin 0.55 / microtubules 0.45 with every other
    # compound to learn from), called a microtubule stabilizer with the 90 % set holding
    # both: 2 of 4 right, every 90 % set covering the truth. Four treatments are too few
    # for a tolerance around the run's accuracy (92 %); the set's coverage is what a call
    # promises.
    assert accuracy >= 0.5 and covered >= 0.75
    # "None of these" exactly where the set at the novelty confidence is empty or the
    # treatment is atypical of the labelled ones (the documented rule, not whichever of the
    # two this draw of the training happens to trigger).
    confidence = imagenet_run.config.novelty_confidence
    novel_set = calls[f"Set_{round(confidence * 100)}"]
    assert calls["Novelty_P"].between(0, 1).all()
    assert (calls["None_Of_These"]
            == ((novel_set == "") | (calls["Novelty_P"] <= 1 - confidence))).all()
    written = pd.read_csv(data / "imagenet" / "calls_treatment.csv")
    assert list(written[sc.TREATMENT]) == list(calls[sc.TREATMENT])
    summary = json.loads((data / "imagenet" / "metrics.json").read_text())["calls"]
    assert summary["n_treatments"] == len(calls)
    assert summary["labelled_accuracy"] == pytest.approx(imagenet_run.ensemble.accuracy)


def _reversed_stains(index: pd.DataFrame) -> pd.DataFrame:
    paths = [c for c in index.columns if c.startswith(sc.PATH_PREFIX)]
    return index[[c for c in index.columns if c not in paths] + paths[::-1]]


def test_predict_with_the_fold_models_gives_the_run_its_own_answers(imagenet_run: CVResult,
                                                                    data: Path,
                                                                    tmp_path: Path) -> None:
    """The run's own screen (its stains in another order) through `predict`: each labelled
    compound by the fold model that held it out gives the run's out-of-fold treatment
    probabilities, and the unlabelled compounds the run's own calls."""
    from cellmorph.api import predict

    index = _reversed_stains(pd.read_parquet(data / "index.parquet"))
    out = tmp_path / "again"
    result = predict(data / "imagenet", index, output=out, precision="fp32", progress=False)
    calls = result.calls.table.set_index(sc.TREATMENT)
    own = imagenet_run.calls.table.set_index(sc.TREATMENT)
    assert set(own.index) <= set(calls.index)
    pd.testing.assert_series_equal(calls.loc[own.index, "Call_MoA"], own["Call_MoA"])
    np.testing.assert_allclose(calls.loc[own.index, "Call_Probability"],
                               own["Call_Probability"], atol=1e-5)
    oof = imagenet_run.seeds[0].levels["treatment"].set_index(sc.TREATMENT)
    labelled = calls.drop(index=own.index)
    assert sorted(labelled.index) == sorted(oof.index)  # every labelled one, no control
    np.testing.assert_allclose(labelled["Call_Probability"],
                               oof.loc[labelled.index, sc.prob_columns(oof)].max(axis=1),
                               atol=1e-5)
    assert (labelled["Call_MoA"] == oof.loc[labelled.index, "predicted"]).all()
    assert result.n_truth == len(oof)
    assert result.truth_accuracy == pytest.approx(imagenet_run.ensemble.accuracy)
    record = json.loads((out / "predict.json").read_text())
    assert record["run"] == str(data / "imagenet") and record["train"]["model"] == \
        "tf_efficientnet_lite0"
    written = len(list((out / "predictions" / "seed0").glob("*.parquet")))
    assert written == 7  # one per fold model, reused by a rerun
    again = predict(data / "imagenet", index, output=out, precision="fp32", progress=False)
    pd.testing.assert_frame_equal(again.calls.table, result.calls.table)


def test_predict_calls_a_second_screen_with_the_fold_models(imagenet_run: CVResult,
                                                            data: Path, tmp_path: Path,
                                                            capsys) -> None:
    """Another SYNTHETIC screen of the same compounds (another seed): its compounds, labelled
    in truth, are called about as well as the run scored its own; a screen lacking a stain
    is refused in one line, with nothing written."""
    from cellmorph.api import predict
    from cellmorph.cli import main

    root = tmp_path / "second"
    synthesize_bbbc021(root / "images", moas=MOAS, size=(96, 120), seed=1, progress=False)
    index = index_bbbc021(root / "images", moa_subset=True,
                          image_csv=root / "images" / "BBBC021_v1_image.csv")
    result = predict(data / "imagenet", _reversed_stains(index), output=root / "calls",
                     precision="fp32", progress=False)
    treated = index.loc[~sc.is_control(index), sc.TREATMENT].unique()
    assert sorted(result.calls.table[sc.TREATMENT]) == sorted(treated)
    # The first screen's accuracy on the same treatments: the run's out-of-fold calls of its
    # labelled compounds and its calls of the unlabelled ones.
    oof = imagenet_run.seeds[0].levels["treatment"]
    own = imagenet_run.calls.table
    first = (int(oof["correct"].sum()) + int((own["Call_MoA"] == own[sc.COMPOUND].map(HIDDEN))
                                             .sum())) / (len(oof) + len(own))
    print(f"second screen {result.truth_accuracy:.3f} of {result.n_truth}, first {first:.3f}")
    assert first >= 0.75
    # Measured (2 epochs, fp32): in one process (2 threads) 12 of 17 right on the second
    # screen against 14 of 17 on the first; on one xdist worker (1 thread, another draw of
    # the training) 11 of 17 against 15 of 17. The second screen's compounds are new draws
    # of each MoA's phenotype (the synthetic compound's jitter follows the screen's seed) and
    # a 2-epoch, 3-MoA model carries over less of them; one treatment is 6 points. The
    # issue's 10 points are measured on the 12-MoA screens (bench/calls_loco.py: 89.9 %
    # against 91.3 %); here the calls must stay well above chance (1/3).
    assert result.truth_accuracy >= 0.5
    from cellmorph.api import report

    page = report(root / "calls", output=root / "calls" / "report.html")
    assert "Calls for the new screen's compounds" in page.html
    assert f"calls right for <b>{result.truth_accuracy:.0%} of the 17" in page.html
    # Each row: a field of the screen's treatment beside one of its nearest reference's.
    assert page.html.count('class="thumb"') == 2 * len(result.calls.table)
    write_parquet(index.drop(columns=["Path_Actin"]), root / "no_actin.parquet")
    out = root / "refused"
    capsys.readouterr()  # what the calls above logged (a CLI run earlier set up the log)
    assert main(["predict", str(data / "imagenet"), str(root / "no_actin.parquet"), "-o",
                 str(out), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "lacks stain(s) ['Actin']" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(CellmorphError, match="preprocess cannot differ .settable: device, "
                                             "precision"):
        predict(data / "imagenet", index, output=out, preprocess={"tile_size": 32})
    train(_cfg(data, "partial", epochs=1, folds=["emetine", "taxol"]), progress=False)
    with pytest.raises(CellmorphError, match=r"no seed kept them all .* 2 of 7 folds done"):
        predict(data / "partial", index, output=out)
    assert not out.exists()


def test_refit_calls_the_unknowns_with_one_model_of_every_labelled_compound(
        imagenet_run: CVResult, data: Path, tmp_path: Path) -> None:
    """refit: true on a finished run resumes it (the folds are not redone) and adds one model
    per seed trained on every labelled compound; it calls the unlabelled compounds, the sets
    stay calibrated on the folds, and the choice is recorded."""
    import shutil

    from cellmorph.api import predict
    from cellmorph.evaluation.calls import REFIT_ROUTE

    run = tmp_path / "refit"
    shutil.copytree(data / "imagenet", run)
    folds = sorted((run / "seed0" / "folds").glob("*/predictions.parquet"))
    stamps = [p.stat().st_mtime_ns for p in folds]
    result = train(_cfg(data, "imagenet", output=run, refit=True), progress=False)
    assert [p.stat().st_mtime_ns for p in folds] == stamps  # resumed, not redone
    refit = fold_dir(run / "seed0", "refit", "refit")
    assert (refit / "model.safetensors").is_file() and (refit / "queries.parquet").is_file()
    crops = pd.read_parquet(refit / "queries.parquet")
    assert sorted(crops[sc.COMPOUND].unique()) == sorted(HIDDEN)
    calls = result.calls.table
    assert result.calls.route == REFIT_ROUTE
    reference = _median_over_folds(run / "seed0" / "refit").loc[calls[sc.TREATMENT]]
    np.testing.assert_allclose(reference.max(axis=1), calls["Call_Probability"], atol=1e-6)
    assert result.calls.labelled_accuracy == imagenet_run.calls.labelled_accuracy  # the folds
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calls"]["route"] == REFIT_ROUTE
    # predict: the unknown compounds by the refitted model, the labelled by their folds.
    again = predict(run, data / "index.parquet", output=tmp_path / "predicted",
                    precision="fp32", progress=False)
    mine = again.calls.table.set_index(sc.TREATMENT).loc[calls[sc.TREATMENT]]
    np.testing.assert_allclose(mine["Call_Probability"], calls["Call_Probability"], atol=1e-5)
    assert again.calls.route == REFIT_ROUTE


def test_bf16_loco_run_keeps_its_documented_properties(data: Path) -> None:
    """precision: bf16 forced (native where the CPU has it, emulated elsewhere: every machine
    runs this path). Numbers differ from fp32 by rounding; what is asserted holds by
    construction: crop probabilities are a float32 softmax, every level's Prob_ columns are
    renormalised medians in float64, and the run records the precision it used."""
    result = train(_cfg(data, "bf16", precision="bf16", epochs=1, folds=["emetine", "taxol"]),
                   progress=False)
    record = json.loads((data / "bf16" / "run.json").read_text())
    assert record["fingerprint"]["precision"] == record["runtime"]["precision"] == "bf16"
    assert record["runtime"]["precision_reason"] == "asked for"
    crops = result.seeds[0].crops
    crop_probs = crops[sc.prob_columns(crops)].to_numpy()
    assert np.isfinite(crop_probs).all() and (crop_probs >= 0).all()
    np.testing.assert_allclose(crop_probs.sum(axis=1), 1.0, atol=1e-5)  # float32 softmax
    for level, table in result.seeds[0].levels.items():
        probs = table[sc.prob_columns(table)].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9, err_msg=level)
        assert (np.asarray(result.classes)[probs.argmax(axis=1)] == table["predicted"]).all()
    assert sorted(crops[sc.COMPOUND].unique()) == ["emetine", "taxol"]
    assert 0 <= result.summary.treatment_accuracy.mean <= 1


def test_pretrained_beats_xavier(imagenet_run: CVResult, data: Path) -> None:
    xavier = train(_cfg(data, "xavier", weights="xavier"), progress=False).summary
    pretrained = imagenet_run.summary
    gain = pretrained.treatment_accuracy.mean - xavier.treatment_accuracy.mean
    assert gain >= 0.25, (pretrained.treatment_accuracy, xavier.treatment_accuracy)

def _train_until_two_folds(start_cli: Callable[..., subprocess.Popen],
                           wait_for_files: Callable[..., None], config: Path, folds_dir: Path,
                           **popen: object) -> subprocess.Popen:
    """Start ``cellmorph train config`` and return once two folds are finished (or it ended)."""
    proc = start_cli("train", str(config), **popen)
    wait_for_files(proc, folds_dir, "*/predictions.parquet", 2)
    return proc


def _same_fold_predictions(run: Path, reference: Path, folds: list[str]) -> None:
    """Each fold's predictions in ``run`` equal those of ``reference`` (folds are
    independent: a subset of a run's folds predicts what the whole run does)."""
    for fold in folds:
        a = pd.read_parquet(fold_dir(run / "seed0", fold) / "predictions.parquet")
        b = pd.read_parquet(fold_dir(reference / "seed0", fold) / "predictions.parquet")
        probs = [c for c in a.columns if c.startswith("Prob_")]
        np.testing.assert_allclose(a[probs], b[probs], atol=1e-5)


def test_killed_run_resumes_to_the_same_predictions(imagenet_run: CVResult, data: Path,
                                                    start_cli, wait_for_files) -> None:
    folds = ["anisomycin", "cytochalasin D", "emetine", "taxol"]
    cfg = _cfg(data, "killed", folds=folds)
    save_config(cfg, data / "killed.yaml")
    folds_dir = data / "killed" / "seed0" / "folds"
    proc = _train_until_two_folds(start_cli, wait_for_files, data / "killed.yaml", folds_dir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, mid-run
    proc.wait()
    done = sorted(folds_dir.glob("*/predictions.parquet"))
    assert 2 <= len(done) < len(folds), "the run should have been killed part-way"
    stamps = {p: p.stat().st_mtime_ns for p in done}
    train(cfg, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished folds kept
    _same_fold_predictions(data / "killed", data / "imagenet", folds)


def test_cached_trunk_equals_frozen_training(data: Path) -> None:
    kw = dict(epochs=1, freeze_stages=3, folds=["cytochalasin B", "taxol"],
              trunk_cache_dtype="float32")
    train(_cfg(data, "frozen", **kw), progress=False)
    train(_cfg(data, "cached", cached_trunk=True, **kw), progress=False)
    for fold in kw["folds"]:
        a = pd.read_parquet(fold_dir(data / "frozen" / "seed0", fold) / "predictions.parquet")
        b = pd.read_parquet(fold_dir(data / "cached" / "seed0", fold) / "predictions.parquet")
        probs = [c for c in a.columns if c.startswith("Prob_")]
        np.testing.assert_allclose(a[probs], b[probs], atol=1e-4)


def test_bbbc014_leave_one_cell_line_out(tmp_path: Path) -> None:
    synthesize_bbbc014(tmp_path, size=(128, 170), progress=False)
    write_parquet(index_bbbc014(tmp_path), tmp_path / "index.parquet")
    cfg = TrainConfig(index=tmp_path / "index.parquet", output=tmp_path / "run",
                      model="tf_efficientnet_lite0", preset="fast", epochs=2, precision="fp32",
                      fold_by="Metadata_CellLine", report_level="well",
                      rgb_map={"DAPI": "G", "FITC": "B"},
                      preprocess=PreprocessConfig(illumination=False, anscombe=True,
                                                  rescale="image", resize=(128, 128),
                                                  grid=(4, 4), tile_size=32, drop_empty=False))
    summary = train(cfg, progress=False).summary
    wells = pd.read_csv(tmp_path / "run" / "seed0" / "predictions_well.csv")
    assert wells.groupby("Metadata_Fold").size().to_dict() == {"A549": 32, "MCF7": 32}
    crops = pd.read_parquet(next((tmp_path / "run" / "seed0" / "folds").glob(
        "*/predictions.parquet")))
    assert crops.groupby([sc.PLATE, sc.WELL]).size().eq(16).all()  # 16 crops an image
    assert summary.well_accuracy.mean > 0.5


def test_bad_training_inputs(data: Path) -> None:
    with pytest.raises(CellmorphError, match="timm does not know the model"):
        train(_cfg(data, "bad1", model="resnet_fifty"), progress=False)
    big = SMALL.model_copy(update={"tiles": "random", "random_size": (200, 200)})
    with pytest.raises(CellmorphError, match=r"crop size \(200, 200\) is larger than the image"):
        train(_cfg(data, "bad2", preprocess=big, cache_dir=data / "c2"), progress=False)
    index = pd.read_parquet(data / "index.parquet")
    few = index[~index[sc.COMPOUND].isin(["cytochalasin D", "latrunculin B"])]
    write_parquet(few, data / "few.parquet")
    with pytest.raises(CellmorphError, match=r"\['Actin disruptors'\] have fewer than two"):
        train(_cfg(data, "bad3", index=data / "few.parquet"), progress=False)
    with pytest.raises(ValueError, match="cached_trunk needs freeze_stages"):
        _cfg(data, "bad4", cached_trunk=True)


def test_compare_initialisations_over_seeds(data: Path) -> None:
    cfg = _cfg(data, "compare", epochs=1, seeds=[0, 1], folds=["emetine", "taxol"])
    results = compare_init(cfg, output=data / "compare", progress=False)
    for init in ("imagenet", "xavier"):
        acc = results[init].summary.treatment_accuracy
        assert len(acc.values) == 2
        assert acc.sem == pytest.approx(np.std(acc.values, ddof=1) / np.sqrt(2))
    assert results["xavier"].summary.weights == "xavier"
    assert (data / "compare" / "compare_init.png").stat().st_size > 1000
    assert (data / "compare" / "compare_init_epochs.png").is_file()
    assert set(json.loads((data / "compare" / "compare_init.json").read_text())) == {
        "imagenet", "xavier"}


def test_diverged_training_stops_with_a_clear_line(data: Path) -> None:
    with pytest.raises(CellmorphError, match=r"training diverged in fold emetine at epoch 1 "
                                             r".*; lower lr"):
        train(_cfg(data, "diverged", lr=1e30, epochs=1, folds=["emetine"]), progress=False)
    assert not list((data / "diverged").glob("seed0/folds/*/predictions.parquet"))


def test_partial_runs_and_single_seeds_say_so(data: Path) -> None:
    from cellmorph.reporting.text import format_cv

    result = train(_cfg(data, "partial", epochs=1, folds=["emetine", "taxol"]), progress=False)
    assert (result.summary.folds_done, result.summary.folds_total) == (2, 7)
    text = format_cv(result)
    assert "(2 of 7 folds)" in text
    assert "±" not in text  # one seed: the spread is undefined, not zero
    assert result.summary.treatment_accuracy.sem is None
    assert "the whole network" in text


def test_compare_init_fine_tunes_the_whole_network_in_both_arms(data: Path) -> None:
    cfg = _cfg(data, "cmp-frozen", epochs=1, freeze_stages=5, cached_trunk=True,
               folds=["emetine"])
    results = compare_init(cfg, output=data / "cmp", progress=False)
    for init, result in results.items():
        assert result.config.freeze_stages == 0 and not result.config.cached_trunk, init
        assert result.summary.trained == "the whole network"


def test_sigint_during_train_exits_130_and_resumes_identically(imagenet_run: CVResult,
                                                               data: Path, start_cli,
                                                               wait_for_files) -> None:
    folds = ["anisomycin", "cytochalasin B", "emetine", "epothilone B"]
    cfg = _cfg(data, "interrupted", folds=folds)
    save_config(cfg, data / "interrupted.yaml")
    folds_dir = data / "interrupted" / "seed0" / "folds"
    proc = _train_until_two_folds(start_cli, wait_for_files, data / "interrupted.yaml", folds_dir,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; outputs written so far are complete, rerun to resume" in err
    done = sorted(folds_dir.glob("*/predictions.parquet"))
    assert 2 <= len(done) < len(folds)
    assert not list((data / "interrupted").rglob("*.part"))
    train(cfg, progress=False)
    _same_fold_predictions(data / "interrupted", data / "imagenet", folds)


def test_a_finished_seed_sets_its_initial_weights_aside(data: Path) -> None:
    """Once a seed's folds are done its initial weights (the network's size) give way to
    their digest; made again from the seed (as adding a fold, or explain, does) they are
    identical to the byte, and a mismatch (another torch, say) is refused."""
    from cellmorph.runs import file_digest
    from cellmorph.training.fold_jobs import initial_model, load_initial

    cfg = _cfg(data, "aside", epochs=1, seeds=[0, 1], folds=["emetine"])
    result = train(cfg, progress=False)
    seed1 = data / "aside" / "seed1"
    assert not list((data / "aside").glob("seed*/init.safetensors"))
    recorded = json.loads((seed1 / "init.json").read_text())["sha256"]
    load_initial(cfg, len(result.classes), 1, seed1 / "init.safetensors")  # in memory, checked
    assert not (seed1 / "init.safetensors").exists()
    initial_model(cfg, len(result.classes), 1, seed1 / "init.safetensors")  # for more folds
    assert file_digest(seed1 / "init.safetensors") == recorded
    (seed1 / "init.safetensors").unlink()
    (seed1 / "init.json").write_text(json.dumps({"sha256": "0" * 16}))
    for make in (initial_model, load_initial):
        with pytest.raises(CellmorphError, match="initial weights, made again, differ"):
            make(cfg, len(result.classes), 1, seed1 / "init.safetensors")
    assert not (seed1 / "init.safetensors").exists()
