"""Field quality control on a SYNTHETIC screen with planted defects: blurred fields,
saturated fields, an empty well and a dead control are flagged with the right reason, and
no clean field is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.profiling.qc import DROPPED, FLAGS, flag_fields
from cellmorph.synth.bbbc021_synthetic import synthesize_bbbc021

PRE = {"grid": [1, 1], "tile_size": 32, "illumination": False}


def _rewrite(row: pd.Series, channels: list[str], change) -> None:
    for stain in channels:
        path = row[sc.path_column(stain)]
        image = tifffile.imread(path)
        tifffile.imwrite(path, change(image).astype(image.dtype))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("qc")
    synthesize_bbbc021(root / "img", moas=["Actin disruptors", "Protein synthesis"],
                       sites=2, progress=False)
    index = api.index_bbbc021(root / "img", moa_subset=True)
    channels = sc.channels_of(index)
    first, second = sorted(index[sc.PLATE].unique())[:2]

    def fields(plate: str, control: bool) -> pd.DataFrame:
        rows = index[(index[sc.PLATE] == plate)
                     & ((index[sc.ROLE] == sc.ROLE_CONTROL) == control)]
        return rows.sort_values([sc.WELL, sc.SITE])

    treated = fields(first, control=False)
    wells = sorted(treated[sc.WELL].unique())
    planted = {}
    for _, row in treated[treated[sc.WELL] == wells[0]].iterrows():  # both sites blurred
        _rewrite(row, channels, lambda im: gaussian_filter(im.astype(np.float32), 4))
        planted[(first, row[sc.WELL], row[sc.SITE])] = "blur"
    row = treated[treated[sc.WELL] == wells[1]].iloc[0]  # one site saturated

    def saturate(im):
        out = im.copy()
        out[: im.shape[0] // 3] = np.iinfo(im.dtype).max
        return out
    _rewrite(row, channels, saturate)
    planted[(first, row[sc.WELL], row[sc.SITE])] = "saturation"
    rng = np.random.default_rng(0)
    dead_control = fields(first, control=True)
    empty_well = fields(second, control=False)
    # An empty well and a dead control: the camera's offset and noise, no cell.
    for plate, rows in ((first, dead_control), (second, empty_well)):
        well = rows[sc.WELL].iloc[0]
        for _, row in rows[rows[sc.WELL] == well].iterrows():
            _rewrite(row, channels, lambda im: 100 + rng.normal(0, 3, im.shape))  # offset
            planted[(plate, row[sc.WELL], row[sc.SITE])] = "empty"
    result = api.profile(index=index, output=root / "run", preprocess=PRE, precision="fp32",
                         progress=False, qc={"drop": ["blur", "saturation"]})
    return result, planted


def test_planted_defects_are_flagged_with_their_reason(planted) -> None:
    result, expected = planted
    qc = result.qc
    flagged = qc[qc[FLAGS] != ""]
    found = {(r[sc.PLATE], r[sc.WELL], r[sc.SITE]): r[FLAGS] for _, r in flagged.iterrows()}
    print(qc.filter(like="QC_").describe().T.round(3).to_string())
    assert found == expected  # every defect with its reason, no clean field
    assert len(qc) == 210  # every field measured


def test_dropped_fields_are_left_out_and_counted(planted) -> None:
    result, expected = planted
    qc = result.qc
    dropped = qc[qc[DROPPED]]
    assert sorted(dropped[FLAGS].unique()) == ["blur", "saturation"]  # qc.drop, not empty
    keys = set(map(tuple, result.images[[sc.PLATE, sc.WELL, sc.SITE]].astype(str).values))
    for _, row in dropped.iterrows():
        assert (str(row[sc.PLATE]), str(row[sc.WELL]), str(row[sc.SITE])) not in keys
    assert (result.config.output / "qc.parquet").is_file()
    from cellmorph.reporting.text import format_qc

    line = format_qc(qc)
    n_expected = len(expected)
    assert f"{n_expected} of {len(qc)} fields flagged" in line and "3 left out" in line
    page = api.report(result.config.output)
    assert 'id="qc-table"' in page.html and page.html.count("<td>saturation</td>") == 1
    assert 'data-figure="plates"' in page.html  # flagged wells crossed out on their plates


def test_a_plate_of_alike_fields_flags_nothing() -> None:
    quality = pd.DataFrame({sc.PLATE: "p", "QC_Blank": False,
                            "QC_DNA_Focus": [1.0, 1.01, 0.99, 1.0],
                            "QC_DNA_Saturated": [0.0, 0.0, 0.0001, 0.0],
                            "QC_DNA_Foreground": [0.2, 0.21, 0.2, 0.19]})
    assert (flag_fields(quality, ["DNA"])[FLAGS] == "").all()
