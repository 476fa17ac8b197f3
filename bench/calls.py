"""Calls for compounds nobody labelled, on a SYNTHETIC BBBC021 screen of all 12 MoAs (the
screen of ``weak_vs_frozen.py``): issue 38's acceptance for the profiles route, with frozen
ImageNet features and with a network trained on the screen's own compound labels.

    .venv/bin/python bench/calls.py [--size 256 320] [--epochs 4]

Three cases, for each kind of profile (labels are hidden at the evaluation, the profiles are
computed once):

- *4 compounds hidden*, one from each of 4 MoAs (of the MoAs with 3 compounds or more, in
  name order, the first compound of each): the hidden treatments' calls against the NSC of
  the labelled rest, and how often their 90 % set holds the true MoA.
- *a whole MoA hidden*, each of the 12 in turn: how many of its treatments are called "none
  of these", against the labelled treatments scored alike (false alarms).
- *a second screen* (another seed, the same design) through ``cellmorph predict``: its
  treatments' calls right, against the reference's own treatments scored alike.

About 10 minutes on 2 CPU cores; writes ``calls.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from weak_vs_frozen import MODEL, PREPROCESS, TRAINING, synth_screen, timed

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.config import EvaluateConfig
from cellmorph.evaluation.calls import call_unknowns
from cellmorph.evaluation.profiles import evaluate_profiles
from cellmorph.log import set_progress
from cellmorph.runtime import cpu_has_native_bf16

EVALUATE = EvaluateConfig(map=False, conformal=False, novelty=False)


def hidden_compounds(wells: pd.DataFrame, n: int = 4) -> dict[str, str]:
    """One compound from each of ``n`` MoAs that keep two compounds or more without it."""
    labelled = sc.treatments(wells)
    per_moa = labelled.groupby(sc.MOA)[sc.COMPOUND].unique()
    chosen = [(moa, sorted(c)[0]) for moa, c in sorted(per_moa.items()) if len(c) >= 3][:n]
    return {compound: moa for moa, compound in chosen}


def four_hidden(wells: pd.DataFrame) -> dict:
    truth = hidden_compounds(wells)
    hidden = wells.copy()
    mask = hidden[sc.COMPOUND].isin(list(truth))
    hidden.loc[mask, sc.ROLE], hidden.loc[mask, sc.MOA] = sc.ROLE_UNLABELLED, None
    result = evaluate_profiles(hidden, EVALUATE)
    calls = result.calls.table
    expected = calls[sc.COMPOUND].map(truth)
    covered = [m in s.split("; ") for m, s in zip(expected, calls["Set_90"], strict=True)]
    return {"hidden": truth, "treatments": len(calls),
            "calls_right": float((calls["Call_MoA"] == expected).mean()),
            "nsc_of_the_rest": result.nn_result("nsc", "cosine").accuracy,
            "set90_coverage": float(statistics.fmean(covered)),
            "flagged": float(calls["None_Of_These"].mean())}


def whole_moa_hidden(wells: pd.DataFrame) -> dict:
    treatments = evaluate_profiles(wells, EVALUATE).treatments
    rows = []
    for moa in sorted(treatments[sc.MOA].unique()):
        hidden = treatments[sc.MOA] == moa
        calls = call_unknowns(treatments[~hidden], treatments[hidden].drop(columns=sc.MOA))
        rows.append({"moa": moa, "treatments": int(hidden.sum()),
                     "flagged": float(calls.table["None_Of_These"].mean()),
                     "false_alarm": calls.labelled_false_alarm})
    return {"per_moa": rows, "flagged_mean": statistics.fmean(r["flagged"] for r in rows),
            "false_alarm_mean": statistics.fmean(r["false_alarm"] for r in rows)}


def second_screen(run: Path, index: Path, out: Path) -> dict:
    result, seconds = timed(api.predict, run, index, output=out, precision="fp32",
                            progress=False)
    return {"treatments": result.n_truth, "calls_right": result.truth_accuracy,
            "reference_scored_alike": result.calls.labelled_accuracy,
            "flagged": float(result.calls.table["None_Of_These"].mean()), "seconds": seconds}


def arguments(doc: str, out: Path) -> argparse.Namespace:
    """The options both calls benches take (``out``: the default JSON); progress off."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(256, 320))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", type=Path, default=out)
    set_progress(False)
    return p.parse_args()


def main() -> None:
    args = arguments(__doc__, Path(__file__).with_suffix(".json"))
    report = {"data": "SYNTHETIC BBBC021, 12 MoAs", "size": list(args.size),
              "model": f"{MODEL} (ImageNet), fp32", "preprocess": PREPROCESS,
              "native_bf16_cpu": cpu_has_native_bf16(), "date": time.strftime("%Y-%m-%d"),
              "profiles": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = synth_screen(work / "first", tuple(args.size))
        other = synth_screen(work / "second", tuple(args.size), seed=1)
        frozen = api.profile(index=index, output=work / "frozen", model=MODEL,
                             preprocess=PREPROCESS, precision="fp32", progress=False)
        api.train(index=index, output=work / "weak", label="compound", epochs=args.epochs,
                  seeds=[0], progress=False, **TRAINING)
        weak = api.embed(work / "weak", progress=False)
        for name, profiles, run in (("frozen ImageNet", frozen, work / "frozen"),
                                    ("weak labels (compound), embedded", weak,
                                     work / "weak" / "embed")):
            row = {"four_compounds_hidden": four_hidden(profiles.wells),
                   "whole_moa_hidden": whole_moa_hidden(profiles.wells),
                   "second_screen": second_screen(run, other, work / f"predict-{run.name}")}
            report["profiles"][name] = row
            print(name, json.dumps(row, indent=1), flush=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
