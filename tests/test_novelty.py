"""Novelty (leave-one-MoA-out): on a SYNTHETIC 12-MoA BBBC021 set profiled and fine-tuned end
to end, the novelty tables of `cellmorph evaluate` and `cellmorph train` equal references
written here from first principles (loops over treatments, crepes called directly, AUROC by
counting pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from crepes import ConformalClassifier
from scipy.spatial.distance import cosine

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.cache import TileCache, TileStore
from cellmorph.cli import main
from cellmorph.config import TrainConfig
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import minimum_calibration
from cellmorph.evaluation.novelty import leave_one_moa_out
from cellmorph.reporting.load import load_training
from cellmorph.synth.bbbc021_synthetic import MOA_PHENOTYPES, synthesize_bbbc021
from cellmorph.training.folds import make_folds


@pytest.fixture(scope="module")
def twelve_moas(tmp_path_factory) -> Path:
    """Profiles of a SYNTHETIC BBBC021 set with all 12 MoAs (one dose a compound)."""
    root = tmp_path_factory.mktemp("twelve")
    synthesize_bbbc021(root / "images", moas=sorted(MOA_PHENOTYPES), max_concentrations=1,
                       controls_per_plate=2, size=(64, 80), progress=False)
    index = index_bbbc021(root / "images", moa_subset=True)
    index.to_parquet(root / "index.parquet")
    api.profile(index=index, output=root / "run", progress=False, precision="fp32",
                preprocess={"grid": [1, 1], "tile_size": 64, "drop_empty": False})
    return root / "run"


def _auroc_by_pairs(novelty: np.ndarray, novel: np.ndarray) -> float:
    pairs = [(a > b) + 0.5 * (a == b) for a in novelty[novel] for b in novelty[~novel]]
    return float(np.mean(pairs))


def _reference(treatments: pd.DataFrame, held_out: str, confidence: float) -> float:
    """AUROC of the novelty score for ``held_out``, computed the slow, obvious way."""
    lab = treatments.reset_index(drop=True)
    x = sc.to_matrix(lab)
    moa, compound = lab[sc.MOA].astype(str).tolist(), lab[sc.COMPOUND].astype(str).tolist()
    known = sorted(set(moa) - {held_out})
    n = len(lab)
    score = np.full((n, len(known)), 1e12)
    for i in range(n):
        for k, c in enumerate(known):
            same = [cosine(x[i], x[j]) for j in range(n) if moa[j] == c and compound[j] != compound[i]]
            other = [cosine(x[i], x[j]) for j in range(n) if moa[j] in known and moa[j] != c
                     and compound[j] != compound[i]]
            if same and other:
                score[i, k] = min(same) / max(min(other), 1e-12)
    labelled = np.array([m != held_out for m in moa])
    truth = np.array([known.index(m) if m != held_out else -1 for m in moa])
    per_class = min(sum(1 for j in range(n) if moa[j] == c) for c in known)
    mondrian = per_class - 1 >= minimum_calibration(confidence)  # never, on this small set
    assert not mondrian
    novelty = np.empty(n)
    for g in sorted(set(compound)):
        test = np.array([c == g for c in compound])
        cal = labelled & ~test
        cc = ConformalClassifier().fit(score[cal, truth[cal]], seed=0)
        novelty[test] = 1 - cc.predict_p(score[test], seed=0).max(axis=1)
    return _auroc_by_pairs(novelty, ~labelled)


def test_novelty_table_equals_a_reference_from_first_principles(twelve_moas: Path, capsys,
                                                                 tmp_path: Path) -> None:
    assert main(["evaluate", str(twelve_moas), "-o", str(tmp_path / "ev"), "--no-map"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "ev" / "novelty.csv")
    mean = table["auroc"].mean()
    assert f"novelty (leave-one-MoA-out, 90% sets): AUROC {mean:.3f}" in printed
    assert len(table) == 12 and (table["scheme"] == "marginal").all()
    result = api.evaluate(twelve_moas, map=False, conformal=False)
    usable = sc.treatments(result.treatments)
    for row in table.itertuples():
        assert row.auroc == pytest.approx(_reference(usable, row.held_out_moa, 0.9), abs=1e-9), \
            row.held_out_moa
        assert row.n_novel == int((usable[sc.MOA] == row.held_out_moa).sum())


def test_novelty_needs_three_moas() -> None:
    two = pd.DataFrame({sc.TREATMENT: ["a@1", "b@1", "c@1", "d@1"],
                        sc.COMPOUND: ["a", "b", "c", "d"], sc.MOA: ["m1", "m1", "m2", "m2"],
                        sc.CONCENTRATION: 1.0, sc.BATCH: "w", sc.ROLE: sc.ROLE_TREATMENT,
                        "Feature_1": [0.0, 0.1, 1.0, 1.1], "Feature_2": [1.0, 1.0, 0.0, 0.1]})
    with pytest.raises(CellmorphError, match="needs three MoAs"):
        leave_one_moa_out(two)


def _median_up(crops: pd.DataFrame) -> pd.DataFrame:
    """crop -> image -> well -> treatment medians of the probabilities, by hand."""
    probs = [c for c in crops.columns if c.startswith("Prob_")]
    keys = [sc.TREATMENT, sc.COMPOUND, sc.MOA]
    image = crops.groupby([*keys, sc.PLATE, sc.WELL, sc.SITE])[probs].median().reset_index()
    well = image.groupby([*keys, sc.PLATE, sc.WELL])[probs].median().reset_index()
    return well.groupby(keys)[probs].median().reset_index()


def _train_reference(run: Path, held_out: str) -> float:
    """AUROC for ``held_out`` from the run's saved predictions: known treatments from the
    leave-one-compound-out table, held-out ones from the fold trained without their MoA."""
    known = pd.read_csv(run / "seed0" / "predictions_treatment.csv")
    crops = pd.concat([pd.read_parquet(p) for p in
                       sorted((run / "seed0" / "novelty").glob("*/predictions.parquet"))])
    unseen = _median_up(crops)
    classes = [c[len("Prob_"):] for c in known.columns if c.startswith("Prob_")]
    others = [c for c in classes if c != held_out]
    lab = pd.concat([known[known[sc.MOA] != held_out], unseen[unseen[sc.MOA] == held_out]])
    p = lab[[f"Prob_{c}" for c in others]].to_numpy(float)
    score = 1 - p / p.sum(axis=1, keepdims=True)
    moa, compound = lab[sc.MOA].tolist(), lab[sc.COMPOUND].tolist()
    novel = np.array([m == held_out for m in moa])
    truth = np.array([others.index(m) if m != held_out else -1 for m in moa])
    novelty = np.empty(len(lab))
    for g in sorted(set(compound)):
        test = np.array([c == g for c in compound])
        cal = ~novel & ~test
        cc = ConformalClassifier().fit(score[cal, truth[cal]], seed=0)
        novelty[test] = 1 - cc.predict_p(score[test], seed=0).max(axis=1)
    return _auroc_by_pairs(novelty, novel)


def test_train_novelty_equals_a_reference_from_the_saved_predictions(twelve_moas: Path, capsys,
                                                                     tmp_path: Path) -> None:
    """A leave-one-compound-out run with novelty on adds one fold per MoA trained without it;
    its table matches the reference, and no held-out treatment was ever a training crop."""
    run = tmp_path / "loco"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "index": str(twelve_moas.parent / "index.parquet"), "output": str(run),
        "model": "tf_efficientnet_lite0", "preset": "fast", "epochs": 5, "lr": 0.01,
        "freeze_stages": "all", "cached_trunk": True, "novelty": True, "keep_models": "none",
        "precision": "fp32",
        "preprocess": {"grid": [1, 1], "tile_size": 64, "illumination": False}}))
    assert main(["train", str(config), "-q"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(run / "novelty.csv")
    assert len(table) == 12 and (table["scheme"] == "marginal").all()
    assert f"novelty (leave-one-MoA-out, 90% sets): AUROC {table['auroc'].mean():.3f}" in printed
    for row in table.itertuples():
        assert row.auroc == pytest.approx(_train_reference(run, row.held_out_moa), abs=1e-6), \
            row.held_out_moa
    (entry,) = [p for p in (run / "cache").iterdir() if p.is_dir()]
    tiles = TileStore(TileCache.open(entry)).table
    labelled = int(sc.is_treatment(tiles).sum())
    for history in (run / "seed0" / "novelty").glob("*/history.json"):
        fold = json.loads(history.read_text())
        preds = pd.read_parquet(history.parent / "predictions.parquet")
        # Tested on exactly the held-out MoA's crops, trained on every other labelled crop.
        assert set(preds[sc.MOA]) == {fold["fold"]}
        assert fold["n_test"] == int((tiles[sc.MOA] == fold["fold"]).sum()) == len(preds)
        assert fold["n_train"] == labelled - fold["n_test"]
    # Reading the folder back scores the same table; the report shows it.
    pd.testing.assert_frame_equal(load_training(run).novelty, table, check_exact=False)
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "held-out MoA scored by a model trained without it" in html
    # The calls' rule beside the empty set's, row by row.
    assert "(calls&#39; rule)" in html or "(calls' rule)" in html
    assert f"<td>{table['none_of_these_rate'].iloc[0]:.0%}</td>" in html


def test_novelty_folds_never_train_on_the_held_out_moa() -> None:
    table = pd.DataFrame({sc.MOA: ["a", "a", "b", "b", "c", "c", "DMSO"],
                          sc.COMPOUND: ["a1", "a2", "b1", "b2", "c1", "c2", "DMSO"],
                          sc.ROLE: [sc.ROLE_TREATMENT] * 6 + [sc.ROLE_CONTROL]})
    with pytest.raises(CellmorphError, match="no prediction can be right.*novelty: true"):
        make_folds(table, by=sc.MOA)
    folds = make_folds(table, by=sc.MOA, unseen_classes=True)
    assert [f.name for f in folds] == ["a", "b", "c"]
    for fold in folds:
        moa = table[sc.MOA].to_numpy()
        assert (moa[fold.test] == fold.name).all() and fold.test.sum() == 2
        assert fold.name not in set(moa[fold.train]) and "DMSO" not in set(moa[fold.train])


def test_novelty_needs_leave_one_compound_out_folds() -> None:
    with pytest.raises(ValueError, match="set fold_by: Metadata_Compound"):
        TrainConfig(index="i.parquet", output="o", novelty=True, fold_by=sc.MOA)
