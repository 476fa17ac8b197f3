"""Probabilities that mean what they say: reliability, expected calibration error (ECE) and
temperature scaling fitted leave-one-compound-out.

A top probability of 0.9 should be right 90 % of the time. The reliability diagram bins
treatments by their top probability and compares each bin's mean confidence with its
accuracy; the ECE is the count-weighted mean gap (Guo et al. 2017, top-label). Temperature
scaling divides the log-probabilities by one number T fitted by maximum likelihood; to stay
leak-free it is fitted, for each compound, on the *other* compounds' treatments only and
applied to that compound's own. Written here because it is one scalar fit (scipy) on tables
the rest of cellmorph already holds; netcal or torch's LBFGS would bring a dependency or
a model object for the same few lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.records import ShortRepr

CALIBRATED_PREFIX = "Calibrated_"
BINS = 10
_EPS = 1e-12


@dataclass(repr=False)
class CalibrationResult(ShortRepr):
    """Calibrated probabilities of every treatment, and how well calibrated both sets are."""

    table: pd.DataFrame  # metadata, Prob_<class>, Calibrated_<class>, Metadata_Temperature
    classes: list[str]
    ece_before: float
    ece_after: float
    reliability_before: pd.DataFrame = field(repr=False)
    reliability_after: pd.DataFrame = field(repr=False)

    def summary(self) -> dict:
        """ECE before and after, and the spread of the fitted temperatures."""
        t = self.table[TEMPERATURE]
        return {"method": "temperature scaling, fitted leave-one-compound-out",
                "ece_before": self.ece_before, "ece_after": self.ece_after,
                "bins": BINS, "temperature_median": float(t.median()),
                "temperature_min": float(t.min()), "temperature_max": float(t.max())}


TEMPERATURE = "Metadata_Temperature"


def reliability(probs: np.ndarray, truth: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per equal-width bin of the top probability: count, mean confidence, accuracy."""
    top = probs.max(axis=1)
    right = probs.argmax(axis=1) == truth
    which = np.minimum((top * bins).astype(int), bins - 1)
    rows = [{"bin_low": b / bins, "bin_high": (b + 1) / bins, "n": int((which == b).sum()),
             "confidence": float(top[which == b].mean()) if (which == b).any() else np.nan,
             "accuracy": float(right[which == b].mean()) if (which == b).any() else np.nan}
            for b in range(bins)]
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = BINS) -> float:
    """Top-label ECE: the count-weighted mean |accuracy - confidence| over the bins."""
    table = reliability(probs, truth, bins)
    used = table[table["n"] > 0]
    return float((used["n"] * (used["accuracy"] - used["confidence"]).abs()).sum()
                 / max(int(used["n"].sum()), 1))


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of softmax(log p / T)."""
    logp = np.log(np.clip(probs, _EPS, 1))

    def nll(log_t: float) -> float:
        scaled = log_softmax(logp / np.exp(log_t), axis=1)
        return float(-scaled[np.arange(len(truth)), truth].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their log divided by ``temperature``, renormalised."""
    return np.exp(log_softmax(np.log(np.clip(probs, _EPS, 1)) / temperature, axis=1))


def calibrate_loco(predictions: pd.DataFrame, *, group: str = sc.COMPOUND) -> CalibrationResult:
    """Temperature-scaled probabilities of a per-treatment prediction table, each compound's
    with a temperature fitted on the labelled treatments of the other compounds."""
    classes = sc.classes_of(predictions)
    if group not in predictions.columns or predictions[group].nunique() < 2:
        raise CellmorphError("calibration needs treatments of at least two compounds "
                             f"({group})")
    probs = predictions[sc.prob_columns(predictions)].to_numpy(float)
    position = {c: i for i, c in enumerate(classes)}
    truth = np.array([position.get(str(m), -1) for m in predictions[sc.MOA]])
    groups = predictions[group].astype(str).to_numpy()
    calibrated = np.empty_like(probs)
    temperature = np.empty(len(probs))
    for g in np.unique(groups):
        own, fit = groups == g, (groups != g) & (truth >= 0)
        if not fit.any():
            raise CellmorphError("calibration needs labelled treatments of other compounds")
        temperature[own] = fit_temperature(probs[fit], truth[fit])
        calibrated[own] = scale(probs[own], temperature[own][0])
    table = predictions.reset_index(drop=True).copy()
    table[TEMPERATURE] = temperature
    for i, c in enumerate(classes):
        table[f"{CALIBRATED_PREFIX}{c}"] = calibrated[:, i]
    lab = truth >= 0
    return CalibrationResult(
        table, classes, expected_calibration_error(probs[lab], truth[lab]),
        expected_calibration_error(calibrated[lab], truth[lab]),
        reliability(probs[lab], truth[lab]), reliability(calibrated[lab], truth[lab]))
