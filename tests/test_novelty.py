"""Novelty (leave-one-MoA-out): on a SYNTHETIC 12-MoA BBBC021 set profiled end to end, the
novelty table of `cellmorph evaluate` equals a reference written here from first principles
(loops over treatments, crepes called directly, AUROC by counting pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crepes import ConformalClassifier
from scipy.spatial.distance import cosine

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.cli import main
from cellmorph.datasets.bbbc021 import index_bbbc021
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import minimum_calibration
from cellmorph.evaluation.novelty import leave_one_moa_out
from cellmorph.synth.bbbc021 import MOA_PHENOTYPES, synthesize_bbbc021


@pytest.fixture(scope="module")
def twelve_moas(tmp_path_factory) -> Path:
    """Profiles of a SYNTHETIC BBBC021 set with all 12 MoAs (one dose a compound)."""
    root = tmp_path_factory.mktemp("twelve")
    synthesize_bbbc021(root / "images", moas=sorted(MOA_PHENOTYPES), max_concentrations=1,
                       controls_per_plate=2, size=(64, 80), progress=False)
    index = index_bbbc021(root / "images", moa_subset=True)
    api.profile(index=index, output=root / "run", progress=False,
                preprocess={"grid": [1, 1], "tile_size": 64, "drop_empty": False})
    return root / "run"


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
    novel = ~labelled
    pairs = [(a > b) + 0.5 * (a == b) for a in novelty[novel] for b in novelty[~novel]]
    return float(np.mean(pairs))


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
