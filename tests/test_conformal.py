"""Conformal prediction: p-values equal crepes called directly on the same scores, sets cover
the true MoA at the asked-for rate on SYNTHETIC LOCO runs, profiles get a kNN version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crepes import ConformalClassifier
from crepes.extras import hinge

from cellmorph import schema as sc
from cellmorph.api import train
from cellmorph.atomic import write_parquet
from cellmorph.cli import main
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import (
    conformal_from_probabilities,
    conformal_from_profiles,
    mondrian_pvalues,
)
from cellmorph.reporting.text import calibration_note, format_cv
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021


def _table(seed: int = 0, n_compounds: int = 12) -> pd.DataFrame:
    """Out-of-fold-like probabilities: 3 MoAs, several compounds each, some mistakes."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_compounds):
        moa = c % 3
        for conc in (1, 3):
            logits = rng.normal(0, 1, 3)
            logits[moa] += 1.5
            p = np.exp(logits) / np.exp(logits).sum()
            rows.append({sc.TREATMENT: f"c{c}@{conc}", sc.COMPOUND: f"c{c}",
                         sc.CONCENTRATION: conc, sc.MOA: f"m{moa}",
                         **{f"Prob_m{k}": p[k] for k in range(3)}})
    return pd.DataFrame(rows)


def test_pvalues_equal_crepes_called_directly() -> None:
    table = _table()
    ours = conformal_from_probabilities(table, seed=3)
    probs = table[["Prob_m0", "Prob_m1", "Prob_m2"]].to_numpy()
    labels = table[sc.MOA].str[1].astype(int).to_numpy()
    test = (table[sc.COMPOUND] == "c4").to_numpy()
    alphas_cal = hinge(probs[~test], np.arange(3), labels[~test])  # crepes' own recipe
    cc = ConformalClassifier().fit(alphas_cal, bins=labels[~test], seed=3)
    alphas_test = hinge(probs[test])
    expected = np.array([cc.predict_p(alphas_test, bins=np.full(test.sum(), c),
                                      seed=3)[:, c] for c in range(3)]).T
    got = ours.table.loc[test, ["P_m0", "P_m1", "P_m2"]].to_numpy()
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(mondrian_pvalues(alphas_cal, labels[~test], alphas_test, 3,
                                                seed=3), expected)


def test_sets_validity_and_efficiency() -> None:
    result = conformal_from_probabilities(_table())
    assert list(result.table.columns[-6:]) == ["Set_80", "SetSize_80", "Set_90", "SetSize_90",
                                               "Set_95", "SetSize_95"]
    eff = result.efficiency().set_index("confidence")
    assert eff.loc[0.95, "mean_set_size"] >= eff.loc[0.8, "mean_set_size"]
    validity = result.validity()
    assert set(validity["moa"]) == {"all", "m0", "m1", "m2"}
    sizes = result.table["SetSize_90"]
    assert ((sizes >= 0) & (sizes <= 3)).all()
    with pytest.raises(CellmorphError, match="lacks Metadata_Compound"):
        conformal_from_probabilities(_table().drop(columns=[sc.COMPOUND]))


def test_knn_conformal_on_profiles() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for c in range(9):
        moa = c % 3
        centre = np.eye(3)[moa] * 3
        for conc in (1, 2):
            rows.append({sc.TREATMENT: f"c{c}@{conc}", sc.COMPOUND: f"c{c}", sc.MOA: f"m{moa}",
                         sc.ROLE: sc.ROLE_TREATMENT, sc.BATCH: "b",
                         **{f"f{k}": centre[k] + rng.normal(0, 0.3) for k in range(3)}})
    result = conformal_from_profiles(pd.DataFrame(rows))
    summary = {lvl["confidence"]: lvl for lvl in result.summary()["levels"]}
    assert summary[0.9]["coverage"] >= 0.85
    assert summary[0.8]["mean_set_size"] < 2  # well separated: mostly single MoAs


@pytest.fixture(scope="module")
def loco_two_seeds(tmp_path_factory) -> tuple[Path, object]:
    """A fast SYNTHETIC LOCO run over two seeds (cached trunk, one epoch)."""
    root = tmp_path_factory.mktemp("conformal")
    synthesize_bbbc021(root / "images", moas=["Actin disruptors", "Microtubule stabilizers",
                                              "Protein synthesis"], size=(96, 120),
                       progress=False)
    index = write_parquet(index_bbbc021(root / "images", moa_subset=True),
                          root / "index.parquet")
    result = train(index=index, output=root / "run", model="tf_efficientnet_lite0",
                   preset="fast", epochs=1, seeds=[0, 1], freeze_stages=5, cached_trunk=True,
                   conformal_levels=["treatment", "well"], progress=False, precision="fp32",
                   preprocess={"illumination": False, "anscombe": True,
                               "control_normalise": True, "rescale": "image", "grid": [2, 2],
                               "tile_size": 64})
    return root / "run", result


def test_coverage_on_synthetic_loco_runs(loco_two_seeds) -> None:
    run, result = loco_two_seeds
    levels = {lvl.confidence: lvl for lvl in result.summary.conformal.levels}
    assert levels[0.9].coverage_mean_over_seeds >= 0.85
    assert levels[0.9].set_size_mean_over_seeds > 0  # set sizes are reported
    assert set(result.conformal) == {"seed0", "seed1", "ensemble"}
    assert (run / "conformal_treatment.csv").is_file()
    assert (run / "seed1" / "conformal_treatment.csv").is_file()
    assert result.summary.ensemble.n == result.summary.n_treatments


def test_well_level_calibration_has_more_points_and_no_leak(loco_two_seeds) -> None:
    """Well-level sets: about three calibration wells per treatment, coverage per well, and a
    well's p-values never depend on the other wells of its own compound."""
    run, result = loco_two_seeds
    treatment, well = result.conformal["seed0"], result.conformal_well["seed0"]
    assert set(result.conformal_well) == {"seed0", "seed1"}
    for moa, n in treatment.calibration_sizes.items():
        assert well.calibration_sizes[moa] >= 2 * n, moa
    assert "exchangeable" in well.summary()["exchangeability"]
    levels = {lvl.confidence: lvl for lvl in result.summary.conformal_well.levels}
    assert levels[0.9].coverage_mean_over_seeds >= 0.8
    assert len(well.table) == len(result.seeds[0].levels["well"])
    for name in ("conformal_well_treatment.csv", "conformal_well_validity.csv",
                 "conformal_well_efficiency.csv", "conformal_well.png"):
        assert (run / "seed0" / name).is_file(), name
    assert "per well" in format_cv(result)
    # Leak: change every other well of one compound; the first well's p-values stay.
    wells = result.seeds[0].levels["well"].reset_index(drop=True)
    compound = wells[sc.COMPOUND].iloc[0]
    others = wells.index[(wells[sc.COMPOUND] == compound) & (wells.index > 0)]
    probs = sc.prob_columns(wells)
    changed = wells.copy()
    changed.loc[others, probs] = changed.loc[others, probs].to_numpy()[:, ::-1]
    before = conformal_from_probabilities(wells, level="well").table
    after = conformal_from_probabilities(changed, level="well").table
    p_columns = [c for c in before.columns if c.startswith(("P_", "PMarginal_"))]
    np.testing.assert_array_equal(before.loc[0, p_columns].to_numpy(float),
                                  after.loc[0, p_columns].to_numpy(float))
    assert len(others) >= 1


def test_report_of_a_bare_treatment_table(loco_two_seeds, tmp_path, capsys) -> None:
    run, _ = loco_two_seeds
    table = tmp_path / "predictions_treatment.csv"
    table.write_bytes((run / "seed0" / "predictions_treatment.csv").read_bytes())
    assert main(["report", str(table)]) == 0
    html = (tmp_path / "predictions_treatment.report.html").read_text()
    for text in ('id="accuracy"', 'data-figure="confusion"', 'id="conformal"',
                 "marginal conformal", "every calibration scheme side by side",
                 "coverage", "A bare prediction table", 'data-figure="reliability"', "ECE"):
        assert text in html, text
    assert "index could not be read" not in html
    # The bold of a multi-MoA set lands on the set's own cells, whatever columns follow.
    treatments = html[html.index('id="treatment-table"'):]
    treatments = treatments[:treatments.index("</table>")]
    rows = treatments.count("<tr class=")
    assert rows == len(pd.read_csv(table)) and treatments.count('<td class="set">') == 2 * rows
    assert "<th>90% set</th>" in html


def test_a_confidence_too_few_calibration_treatments_support_is_said() -> None:
    """12 compounds of 3 MoAs: each class calibrates on 6-8 treatments, enough for 80 % (4)
    but not for 90 % (9) or 95 % (19), where a coverage near 100 % says nothing (Mondrian;
    auto calibrates those levels marginally)."""
    result = conformal_from_probabilities(_table(), scheme="mondrian")
    assert result.calibration_sizes == {"m0": 6, "m1": 6, "m2": 6}
    levels = {level["confidence"]: level for level in result.summary()["levels"]}
    assert levels[0.8]["too_few_calibration"] == []
    assert levels[0.9]["too_few_calibration"] == ["m0", "m1", "m2"]
    assert levels[0.9]["calibration_needed"] == 9 and levels[0.95]["calibration_needed"] == 19
    assert calibration_note(levels[0.8]["too_few_calibration"], 4) == ""
    assert "under 9, to rule out 3 MoA(s)" in calibration_note(levels[0.9]["too_few_calibration"],
                                                               levels[0.9]["calibration_needed"])
    auto = conformal_from_probabilities(_table())
    assert auto.schemes == {0.8: "mondrian", 0.9: "marginal", 0.95: "marginal"}
    assert all(level["too_few_calibration"] == [] for level in auto.summary()["levels"])


def test_probabilities_that_are_not_are_refused_or_warned(tmp_path, capsys) -> None:
    table = _table()
    bad = table.assign(Prob_m0=-table["Prob_m0"])
    bad.to_csv(tmp_path / "negative.csv", index=False)
    assert main(["report", str(tmp_path / "negative.csv")]) == 2
    assert "row 1: Prob_m0 is" in capsys.readouterr().err
    table.assign(Prob_m0=table["Prob_m0"] * 0.5).to_csv(tmp_path / "scores.csv", index=False)
    assert main(["report", str(tmp_path / "scores.csv")]) == 0
    assert "rows' probabilities do not sum to 1" in capsys.readouterr().err  # said, not refused


def _benchmark_like(seed: int = 0, accuracy: float = 0.97) -> pd.DataFrame:
    """A BBBC021-shaped prediction table: 12 MoAs of 4-14 treatments (1-3 concentrations
    of each compound), from a classifier right on ``accuracy`` of the treatments."""
    rng = np.random.default_rng(seed)
    sizes = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 4]
    rows = []
    for moa, n in enumerate(sizes):
        left, c = n, 0
        while left:
            doses = min(left, int(rng.integers(1, 4)))
            for conc in range(doses):
                right = rng.random() < accuracy
                winner = moa if right else int(rng.choice([k for k in range(12) if k != moa]))
                logits = rng.normal(0, 0.5, 12)
                logits[winner] += 4.0
                p = np.exp(logits) / np.exp(logits).sum()
                rows.append({sc.TREATMENT: f"m{moa}c{c}@{conc}", sc.COMPOUND: f"m{moa}c{c}",
                             sc.CONCENTRATION: conc, sc.MOA: f"m{moa:02d}",
                             **{f"Prob_m{k:02d}": p[k] for k in range(12)}})
            left -= doses
            c += 1
    return pd.DataFrame(rows)


def test_auto_gives_sets_of_about_one_moa_where_mondrian_cannot() -> None:
    """Issue 23's arithmetic: with 4-14 treatments a MoA, Mondrian at 90 % keeps the small MoAs
    in every set; auto falls back to marginal calibration there, valid and informative."""
    table = _benchmark_like()
    assert len(table) == 103
    predicted = table[[c for c in table.columns if c.startswith("Prob_")]].to_numpy().argmax(1)
    assert (np.array([f"m{k:02d}" for k in predicted]) == table[sc.MOA]).mean() > 0.95
    auto = conformal_from_probabilities(table, confidences=[0.9], scheme="auto")
    mondrian = conformal_from_probabilities(table, confidences=[0.9], scheme="mondrian")
    assert auto.schemes == {0.9: "marginal"} and mondrian.schemes == {0.9: "mondrian"}
    level = auto.summary()["levels"][0]
    assert level["coverage"] >= 0.85 and level["mean_set_size"] <= 1.3
    assert mondrian.summary()["levels"][0]["mean_set_size"] > level["mean_set_size"]
    side = auto.compare_schemes().set_index("scheme")
    assert side.loc["auto", "mean_set_size"] == pytest.approx(level["mean_set_size"])
    assert side.loc["mondrian", "mean_set_size"] == pytest.approx(
        mondrian.summary()["levels"][0]["mean_set_size"])
    assert "marginal conformal" in auto.scheme and "auto:" in auto.scheme


def test_marginal_pvalues_equal_crepes_called_directly() -> None:
    table = _table()
    result = conformal_from_probabilities(table, scheme="marginal", seed=3)
    probs = table[["Prob_m0", "Prob_m1", "Prob_m2"]].to_numpy()
    labels = table[sc.MOA].str[1].astype(int).to_numpy()
    test = (table[sc.COMPOUND] == "c4").to_numpy()
    cc = ConformalClassifier().fit(hinge(probs[~test], np.arange(3), labels[~test]), seed=3)
    expected = cc.predict_p(hinge(probs[test]), seed=3)
    got = result.table.loc[test, ["PMarginal_m0", "PMarginal_m1", "PMarginal_m2"]].to_numpy()
    np.testing.assert_allclose(got, expected)
    sets = result.table.loc[test, "Set_90"]
    assert list(sets) == ["; ".join(f"m{k}" for k in range(3) if row[k] > 0.1) for row in expected]
