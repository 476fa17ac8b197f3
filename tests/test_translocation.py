"""The nuclear-translocation readout on real BBBC014 pixels (and a SYNTHETIC plate): it must
see NF-kB in the nucleus at the highest TNF-alpha dose and not at the lowest. The test fails
if the DAPI and FITC channels are swapped again."""

from __future__ import annotations

import numpy as np
import pytest

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.datasets.bbbc014 import index_bbbc014
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.readout import score_readout, z_prime
from cellmorph.profiling.translocation import RATIO, cell_ratios
from cellmorph.synth.bbbc014_synthetic import synthesize_bbbc014


def test_real_pixels_show_translocation_at_the_high_dose(real014_index, tmp_path) -> None:
    result = api.translocation(real014_index, output=tmp_path / "tl", progress=False)
    ratio = result.wells.set_index(sc.WELL)[RATIO]
    assert ratio["A01"] > 1.5  # 1e-7 M TNF-alpha: NF-kB in the nucleus
    assert 0.8 < ratio["A12"] < 1.3  # 1e-13 M: nucleus no brighter than the cytoplasm
    assert ratio["A01"] / ratio["A12"] > 1.5
    cells = result.fields.set_index(sc.WELL)["Metadata_CellCount"]
    assert (cells > 100).all()  # ~250-300 nuclei a field
    assert (tmp_path / "tl" / "translocation_dose_response.png").stat().st_size > 1000
    assert "fewer than two wells" in result.scores["note"]
    assert result.potency.empty  # two doses: no curve to fit, and the text says so
    assert "no EC50: the readout's dose series has 2 concentrations" in api.describe(result)


def test_swapped_channels_do_not_pass(real014_index) -> None:
    """What the readout sees if FITC is taken for the nuclei: no contrast between doses."""
    from cellmorph.imageio import read_image

    ratios = {}
    for _, row in real014_index.iterrows():
        swapped = cell_ratios(read_image(row["Path_DAPI"]), read_image(row["Path_FITC"]))
        ratios[row[sc.WELL]] = float(np.median(swapped))
    assert not (ratios["A12"] < 1.3 and ratios["A01"] / ratios["A12"] > 1.5)


def test_synthetic_plate_scores_with_cell_line_hold_out(tmp_path) -> None:
    synthesize_bbbc014(tmp_path, size=(192, 256), progress=False)
    result = api.translocation(index_bbbc014(tmp_path), output=tmp_path / "tl",
                               progress=False)
    s = result.scores
    assert (s["n_positive"], s["n_negative"]) == (32, 32)
    assert s["auc"] > 0.9 and s["accuracy"] > 0.8 and s["holdout"] == sc.CELL_LINE
    assert s["median_ratio_positive"] > s["median_ratio_negative"]
    assert result.wells[sc.SYNTHETIC].all()
    # The synthetic plate's nuclear signal is a logistic in log dose centred at 1e-10 M (the
    # readout, a ratio of intensities, is a monotone function of it): an EC50 near there
    # for each cell line, with its interval.
    potency = result.potency.set_index(sc.CELL_LINE)
    assert sorted(potency.index) == ["A549", "MCF7"] and (potency["fit"] == "ok").all()
    assert potency["ec50"].between(1e-11, 1e-9).all()
    assert ((potency["ec50_low"] < potency["ec50"])
            & (potency["ec50"] < potency["ec50_high"])).all()
    assert "EC50 of the readout" in api.describe(result)
    assert (tmp_path / "tl" / "translocation_potency.csv").is_file()


def test_scores_match_their_definitions() -> None:
    pos, neg = np.array([2.0, 2.2, 1.8]), np.array([1.0, 1.1, 0.9])
    expected = 1 - 3 * (pos.std(ddof=1) + neg.std(ddof=1)) / abs(pos.mean() - neg.mean())
    assert z_prime(pos, neg) == pytest.approx(expected)


def test_readout_errors(real014_index) -> None:
    with pytest.raises(CellmorphError, match=r"no stain \['Hoechst'\]"):
        api.translocation(real014_index, nuclei="Hoechst", progress=False)
    wells = real014_index.assign(**{RATIO: [2.0, 1.0]})
    with pytest.raises(CellmorphError, match="no labelled well is 'moved'"):
        score_readout(wells, "moved")
