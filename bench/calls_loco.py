"""Calls for compounds nobody labelled through the classifier route, on the SYNTHETIC
12-MoA BBBC021 screen of ``calls.py``: issue 38's acceptance for leave-one-compound-out
fine-tuning (the profiles route is ``calls.py``'s).

    .venv/bin/python bench/calls_loco.py [--size 256 320] [--epochs 4]

One LOCO run (EfficientNet-Lite0, ImageNet weights, stages 5-7 and the head fine-tuned on a
cached trunk, ``fast`` preset, fp32) with ``novelty: true`` and ``refit: true``, on the screen
with 4 compounds' labels hidden (one from each of 4 MoAs, chosen as ``calls.py`` chooses):

- *4 compounds hidden*: their calls from the fold models' median and from the refitted
  model, against the run's LOCO accuracy on the labelled rest; how often the 90 % sets hold
  the true MoA.
- *a whole MoA hidden*, each of the 12 in turn: the run's leave-one-MoA-out folds (a model
  trained without the MoA predicts it): how many of its treatments are "none of these",
  against the known ones (false alarms).
- *a second screen* (another seed: every compound a new draw of its MoA's phenotype)
  through ``cellmorph predict``: its treatments' calls right, against the first screen's
  same treatments (out-of-fold calls of the labelled, the run's calls of the hidden).

About 25 minutes on 2 CPU cores; writes ``calls_loco.json``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from calls import arguments, hidden_compounds
from weak_vs_frozen import PREPROCESS, TRAINING, synth_screen, timed

from cellmorph import api
from cellmorph import schema as sc
from cellmorph.atomic import write_parquet
from cellmorph.evaluation.calls import call_from_probabilities
from cellmorph.evaluation.predictions import aggregate_probabilities, combine_models
from cellmorph.runtime import cpu_has_native_bf16


def hide(index_path: Path, truth: dict[str, str]) -> Path:
    index = pd.read_parquet(index_path)
    mask = index[sc.COMPOUND].isin(list(truth))
    index.loc[mask, sc.ROLE], index.loc[mask, sc.MOA] = sc.ROLE_UNLABELLED, None
    return write_parquet(index, index_path.with_name("hidden.parquet"))


def scored(calls: pd.DataFrame, truth: dict[str, str]) -> dict:
    expected = calls[sc.COMPOUND].map(truth)
    covered = [m in s.split("; ") for m, s in zip(expected, calls["Set_90"], strict=True)]
    return {"calls_right": float((calls["Call_MoA"] == expected).mean()),
            "set90_coverage": float(statistics.fmean(covered)),
            "flagged": float(calls["None_Of_These"].mean())}


def fold_median_calls(run: Path, result) -> pd.DataFrame:
    """The hidden compounds' calls from the fold models' median (the run's own calls come
    from the refitted model)."""
    queries = [aggregate_probabilities(pd.read_parquet(p), "treatment")
               for p in sorted((run / "seed0" / "folds").glob("*/queries.parquet"))]
    cfg = result.config
    return call_from_probabilities(result.ensemble.table, combine_models(queries),
                                   confidences=cfg.confidences,
                                   novelty_confidence=cfg.novelty_confidence).table


def main() -> None:
    args = arguments(__doc__, Path(__file__).with_suffix(".json"))
    report = {"data": "SYNTHETIC BBBC021, 12 MoAs", "size": list(args.size),
              "training": {**TRAINING, "epochs": args.epochs, "seeds": [0], "novelty": True,
                           "refit": True},
              "preprocess": PREPROCESS, "native_bf16_cpu": cpu_has_native_bf16(),
              "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = synth_screen(work / "first", tuple(args.size))
        other = synth_screen(work / "second", tuple(args.size), seed=1)
        truth = hidden_compounds(pd.read_parquet(index))
        result, seconds = timed(api.train, index=hide(index, truth), output=work / "loco",
                                epochs=args.epochs, seeds=[0], novelty=True, refit=True,
                                progress=False, **TRAINING)
        refit_calls = result.calls.table
        report["four_compounds_hidden"] = {
            "hidden": truth, "treatments": len(refit_calls),
            "loco_accuracy_of_the_rest": result.ensemble.accuracy,
            "fold_median": scored(fold_median_calls(work / "loco", result), truth),
            "refit": scored(refit_calls, truth), "train_seconds": seconds}
        novelty = result.novelty
        report["whole_moa_hidden"] = {
            "per_moa": novelty[["held_out_moa", "n_novel", "none_of_these_rate",
                                "none_of_these_false_alarm_rate", "auroc"]].to_dict("records"),
            "flagged_mean": float(novelty["none_of_these_rate"].mean()),
            "false_alarm_mean": float(novelty["none_of_these_false_alarm_rate"].mean())}
        oof = result.seeds[0].levels["treatment"]
        first = ((int(oof["correct"].sum()) + int((refit_calls["Call_MoA"] == refit_calls[
            sc.COMPOUND].map(truth)).sum())) / (len(oof) + len(refit_calls)))
        predicted, seconds = timed(api.predict, work / "loco", other,
                                   output=work / "predicted", precision="fp32",
                                   progress=False)
        report["second_screen"] = {"treatments": predicted.n_truth,
                                   "calls_right": predicted.truth_accuracy,
                                   "first_screen_same_treatments": first,
                                   "route": predicted.calls.route, "seconds": seconds}
        print(json.dumps(report, indent=1), flush=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
