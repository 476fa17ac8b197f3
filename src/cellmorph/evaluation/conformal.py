"""Conformal prediction at treatment level: a p-value for every MoA and prediction sets that
contain the true MoA with the asked-for confidence (Kensert et al.'s stated future work).

Two calibration schemes, both with crepes' ``ConformalClassifier``:

- *Mondrian* (class-conditional), as crepes' own ``WrapClassifier(class_cond=True)`` does it:
  the p-value of MoA *c* compares a treatment's nonconformity for *c* with those of calibration
  treatments whose true MoA is *c*. Coverage holds for every MoA, but a MoA with *n*
  calibration treatments cannot be ruled out at a confidence above n/(n + 1): BBBC021's MoAs
  have 4-14 treatments, so at 90 % or 95 % the small ones stay in every set.
- *marginal*: one calibration set over all MoAs. Coverage holds on average over MoAs (not for
  each), and sets shrink to about one MoA when the model is sure.
- *auto* (the default) uses Mondrian at a confidence every MoA's calibration set supports,
  marginal at the others, and says which it used at each.

Calibration without leakage (leave-one-compound-out): the treatments of one compound are
calibrated only against the treatments of the *other* compounds, and every score, test or
calibration, comes from a model (or a nearest-neighbour search) that never saw that
treatment's compound: for fine-tuning, the out-of-fold predictions of each compound's own
fold; for profiles, nearest neighbours among other compounds (NSC). This is cross-conformal
(jackknife-style) calibration: all scores are out-of-fold and treated the same way, so test
and calibration scores are exchangeable up to the small difference between the fold models.
Its guarantee is approximate (Barber et al. 2021 bound the miscoverage by 2 alpha in the
worst case); the empirical coverage is reported beside every nominal level, per MoA too.

Well level (fine-tuning, ``conformal_levels: [well]``): every well is a calibration point,
about three times as many as treatments, so small MoAs can be ruled out at higher
confidence. What that assumes: wells are exchangeable across compounds. The wells of one
compound are still calibrated only on other compounds' wells (their replicates are not
independent of each other), and the coverage is per well: a treatment's replicate wells
count separately, and a set is about a well, not a treatment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from crepes import ConformalClassifier
from crepes.extras import hinge
from scipy.spatial.distance import cdist

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.knn import single_compound_moas
from cellmorph.records import ShortRepr

CONFIDENCES = (0.8, 0.9, 0.95)
PVALUE_PREFIX = "P_"  # class-conditional (Mondrian) p-values
MARGINAL_PREFIX = "PMarginal_"  # marginal p-values
SCHEMES = ("auto", "mondrian", "marginal")
_SCHEME_WORDS = {"mondrian": "Mondrian (class-conditional) conformal",
                 "marginal": "marginal conformal (one calibration set over all MoAs)"}
CALIBRATION = ("crepes, calibrated leave-one-compound-out on out-of-fold scores of the other "
               "compounds")
WELL_LEVEL = ("well level: every well a calibration point, wells taken as exchangeable across "
              "compounds; coverage is per well, a treatment's replicate wells counted "
              "separately")


@dataclass(repr=False)
class ConformalResult(ShortRepr):
    """Per-treatment p-values and prediction sets, and their validity and efficiency."""

    method: str
    classes: list[str]
    confidences: tuple[float, ...]
    table: pd.DataFrame  # metadata, P_/PMarginal_<class>, Set_<conf> ("a; b"), SetSize_<conf>
    asked: str = "auto"  # the scheme asked for: auto, mondrian or marginal
    schemes: dict[float, str] = field(default_factory=dict)  # the one used at each confidence
    notes: dict = field(default_factory=dict)
    calibration_sizes: dict[str, int] = field(default_factory=dict)  # smallest, per class

    @property
    def scheme(self) -> str:
        """The calibration, in words: which scheme at which confidence, and why."""
        used = sorted(set(self.schemes.values()))
        if len(used) == 1:
            text = _SCHEME_WORDS[used[0]]
        else:
            text = "; ".join(f"{_SCHEME_WORDS[s]} at " + ", ".join(
                f"{c:.0%}" for c, u in self.schemes.items() if u == s) for s in used)
        if self.asked == "auto" and "marginal" in used:
            unit = "wells" if self.notes.get("level") == "well" else "treatments"
            text += (" (auto: Mondrian needs at least 1/(1 - confidence) - 1 calibration "
                     f"{unit} of every MoA)")
        return f"{text}; {CALIBRATION}"

    def too_few_calibration(self, confidence: float) -> list[str]:
        """Classes whose calibration set is too small to be ruled out at ``confidence``: a
        class with n calibration treatments has p-values of at least 1/(n + 1) (crepes'
        smoothing lowers that only at random), so its sets need n >= 1/(1 - confidence) - 1."""
        needed = minimum_calibration(confidence)
        return [c for c in self.classes if self.calibration_sizes.get(c, needed) < needed]

    def set_column(self, confidence: float) -> str:
        """The column holding the prediction sets at ``confidence``."""
        return f"Set_{round(confidence * 100):d}"

    def members(self, confidence: float) -> np.ndarray:
        """(rows, classes): is each class in each row's set at ``confidence`` (the p-values
        of the scheme used there, as ``Set_<confidence>`` lists them)."""
        prefix = PVALUE_PREFIX if self.schemes[confidence] == "mondrian" else MARGINAL_PREFIX
        return self.table[[f"{prefix}{c}" for c in self.classes]].to_numpy() > 1 - confidence

    def summary_table(self) -> pd.DataFrame:
        """Coverage and efficiency at each confidence (what a notebook shows)."""
        return pd.DataFrame(self.summary()["levels"]).drop(columns=["too_few_calibration"])

    def validity(self) -> pd.DataFrame:
        """Empirical coverage (true MoA in the set) per confidence, overall and per MoA."""
        lab = self.table[self.table[sc.MOA].isin(self.classes)]
        rows = []
        for conf in self.confidences:
            covered = _covered(lab, self.set_column(conf))
            rows.append({"confidence": conf, "moa": "all", "coverage": float(covered.mean()),
                         "n": int(len(lab))})
            for moa, part in lab.groupby(sc.MOA):
                rows.append({"confidence": conf, "moa": moa,
                             "coverage": float(_covered(part, self.set_column(conf)).mean()),
                             "n": int(len(part))})
        return pd.DataFrame(rows)

    def efficiency(self) -> pd.DataFrame:
        """Mean set size, and how often a set holds exactly one MoA or none, per confidence."""
        rows = []
        for conf in self.confidences:
            size = self.table[f"SetSize_{round(conf * 100):d}"]
            rows.append({"confidence": conf, "scheme": self.schemes.get(conf, self.asked),
                         **_set_sizes(size)})
        return pd.DataFrame(rows)

    def efficiency_per_moa(self) -> pd.DataFrame:
        """The same per true MoA (labelled treatments only)."""
        lab = self.table[self.table[sc.MOA].isin(self.classes)]
        return pd.DataFrame([{"confidence": conf, "moa": moa, "n": int(len(part)),
                              **_set_sizes(part[f"SetSize_{round(conf * 100):d}"])}
                             for conf in self.confidences
                             for moa, part in lab.groupby(sc.MOA)])

    def compare_schemes(self) -> pd.DataFrame:
        """Coverage and efficiency of every scheme at every confidence, side by side."""
        lab = self.table[sc.MOA].isin(self.classes).to_numpy()
        truth = np.array([self.classes.index(m) if ok else -1
                          for m, ok in zip(self.table[sc.MOA], lab, strict=True)])
        pvalues = {"mondrian": self.table[[f"{PVALUE_PREFIX}{c}" for c in self.classes]],
                   "marginal": self.table[[f"{MARGINAL_PREFIX}{c}" for c in self.classes]]}
        sizes = self.calibration_sizes
        rows = []
        for asked in SCHEMES:
            used = schemes_used(asked, self.confidences, sizes)
            for conf in self.confidences:
                members = pvalues[used[conf]].to_numpy() > 1 - conf
                covered = members[np.flatnonzero(lab), truth[lab]]
                rows.append({"scheme": asked, "confidence": conf, "used": used[conf],
                             "coverage": float(covered.mean()) if len(covered) else np.nan,
                             **_set_sizes(pd.Series(members.sum(axis=1)))})
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        """Coverage and efficiency per confidence, for metrics.json and the terminal."""
        validity = self.validity()
        overall = validity[validity["moa"] == "all"].set_index("confidence")["coverage"]
        eff = self.efficiency().set_index("confidence")
        return {"method": self.method, "scheme": self.scheme, **self.notes,
                "levels": [{"confidence": c, "scheme": self.schemes.get(c, self.asked),
                            "coverage": float(overall[c]),
                            "mean_set_size": float(eff.loc[c, "mean_set_size"]),
                            "single_label_rate": float(eff.loc[c, "single_label_rate"]),
                            "empty_rate": float(eff.loc[c, "empty_rate"]),
                            "too_few_calibration": self.too_few_calibration(c)
                            if self.schemes.get(c) == "mondrian" else [],
                            "calibration_needed": minimum_calibration(c)}
                           for c in self.confidences]}


def _set_sizes(size: pd.Series) -> dict[str, float]:
    return {"mean_set_size": float(size.mean()), "single_label_rate": float((size == 1).mean()),
            "empty_rate": float((size == 0).mean())}


def schemes_used(asked: str, confidences: Sequence[float],
                 calibration_sizes: dict[str, int]) -> dict[float, str]:
    """The scheme at each confidence: the one asked for, or for ``auto`` Mondrian where every
    class has the calibration treatments the confidence needs, marginal elsewhere."""
    if asked not in SCHEMES:
        raise CellmorphError(f"unknown conformal scheme {asked!r}; choose from {list(SCHEMES)}")
    if asked != "auto":
        return {c: asked for c in confidences}
    smallest = min(calibration_sizes.values(), default=0)
    return {c: "mondrian" if smallest >= minimum_calibration(c) else "marginal"
            for c in confidences}


def minimum_calibration(confidence: float) -> int:
    """Calibration objects a class needs before its p-values can fall below 1 - confidence."""
    return int(np.ceil(1 / (1 - confidence) - 1 - 1e-9))


def _covered(table: pd.DataFrame, column: str) -> pd.Series:
    return pd.Series([moa in set(s.split("; ")) if s else False
                      for moa, s in zip(table[sc.MOA], table[column], strict=True)],
                     index=table.index)


def mondrian_pvalues(cal_scores: np.ndarray, cal_labels: np.ndarray, test_scores: np.ndarray,
                     n_classes: int, *, seed: int = 0) -> np.ndarray:
    """Class-conditional conformal p-values (n_test, n_classes) from nonconformity scores.

    ``cal_scores`` are the calibration objects' scores for their true class (label index in
    ``cal_labels``); ``test_scores`` (n_test, n_classes) every test object's score for every
    class. A class with no calibration object cannot be ruled out: its p-values are 1.
    """
    cc = ConformalClassifier().fit(cal_scores, bins=cal_labels, seed=seed)
    p = np.ones((len(test_scores), n_classes))
    present = set(np.unique(cal_labels).tolist())
    for c in range(n_classes):
        if c in present:
            p[:, c] = cc.predict_p(test_scores, bins=np.full(len(test_scores), c),
                                   seed=seed)[:, c]
    return p


def marginal_pvalues(cal_scores: np.ndarray, test_scores: np.ndarray, *,
                     seed: int = 0) -> np.ndarray:
    """Marginal conformal p-values (n_test, n_classes): every class against one calibration
    set of the calibration objects' scores for their true classes."""
    return ConformalClassifier().fit(cal_scores, seed=seed).predict_p(test_scores, seed=seed)


@dataclass(frozen=True)
class Calibrated:
    """Leave-one-group-out p-values under both schemes, and the smallest calibration set of
    each class over the groups."""

    mondrian: np.ndarray
    marginal: np.ndarray
    sizes: np.ndarray


def calibrate_by_group(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_classes: int,
              seed: int) -> Calibrated:
    """p-values of each group's objects, calibrated on every other group's labelled ones."""
    mondrian = np.ones_like(scores, dtype=float)
    marginal = np.ones_like(scores, dtype=float)
    labelled = labels >= 0
    smallest = np.full(n_classes, np.iinfo(np.int64).max)
    for g in np.unique(groups):
        test = groups == g
        cal = labelled & ~test
        if cal.sum() == 0:
            raise CellmorphError("conformal prediction needs labelled treatments of at least "
                                 "two compounds")
        mondrian[test] = mondrian_pvalues(scores[cal, labels[cal]], labels[cal], scores[test],
                                          n_classes, seed=seed)
        marginal[test] = marginal_pvalues(scores[cal, labels[cal]], scores[test], seed=seed)
        smallest = np.minimum(smallest, np.bincount(labels[cal], minlength=n_classes))
    return Calibrated(mondrian, marginal, smallest)


def _result(method: str, table: pd.DataFrame, classes: list[str], calibrated: Calibrated,
            confidences: Sequence[float], scheme: str,
            notes: dict | None = None) -> ConformalResult:
    keep = [c for c in (sc.TREATMENT, sc.COMPOUND, sc.CONCENTRATION, sc.MOA, sc.PLATE,
                        sc.WELL, sc.BATCH, sc.SYNTHETIC) if c in table.columns]
    out = table[keep].reset_index(drop=True).copy()
    for i, c in enumerate(classes):
        out[f"{PVALUE_PREFIX}{c}"] = calibrated.mondrian[:, i]
    for i, c in enumerate(classes):
        out[f"{MARGINAL_PREFIX}{c}"] = calibrated.marginal[:, i]
    sizes = {c: int(n) for c, n in zip(classes, calibrated.sizes, strict=True)}
    used = schemes_used(scheme, confidences, sizes)
    for conf in confidences:
        p = calibrated.mondrian if used[conf] == "mondrian" else calibrated.marginal
        members = p > 1 - conf
        tag = round(conf * 100)
        out[f"Set_{tag:d}"] = ["; ".join(np.asarray(classes)[row]) for row in members]
        out[f"SetSize_{tag:d}"] = members.sum(axis=1)
    return ConformalResult(method, list(classes), tuple(confidences), out, scheme, used,
                           notes=notes or {}, calibration_sizes=sizes)


def conformal_from_probabilities(predictions: pd.DataFrame, *,
                                 confidences: Sequence[float] = CONFIDENCES,
                                 group: str = sc.COMPOUND, scheme: str = "auto",
                                 level: str = "treatment", seed: int = 0) -> ConformalResult:
    """Conformal prediction from per-treatment class probabilities (out-of-fold).

    ``predictions`` is a ``predictions_treatment.csv``-style table: compound, MoA and one
    ``Prob_<MoA>`` column per class, from any model or paper. Nonconformity is crepes' hinge
    score, 1 - p(class). ``level="well"`` says the rows are wells (see the module notes on
    what calibrating wells assumes); the calibration is the same.
    """
    classes = sc.classes_of(predictions)
    if len(classes) < 2:
        raise CellmorphError("conformal prediction needs Prob_<MoA> columns for at least two "
                             "classes")
    for col in (group, sc.MOA):
        if col not in predictions.columns:
            raise CellmorphError(f"the prediction table lacks {col}; it needs compound, MoA "
                                 "and Prob_<MoA> columns")
    probs = predictions[sc.prob_columns(predictions)].to_numpy(float)
    if not np.isfinite(probs).all():
        raise CellmorphError("the prediction table holds NaN or infinite probabilities")
    position = {c: i for i, c in enumerate(classes)}
    labels = np.array([position.get(str(m), -1) for m in predictions[sc.MOA]])
    calibrated = calibrate_by_group(hinge(probs), labels, predictions[group].astype(str).to_numpy(),
                           len(classes), seed)
    method = "class probabilities (hinge score)"
    if level == "well":
        return _result(f"{method}, per well", predictions, classes, calibrated, confidences,
                       scheme, {"level": "well", "exchangeability": WELL_LEVEL})
    return _result(method, predictions, classes, calibrated, confidences, scheme)


def other_compound_distances(profiles: np.ndarray, compounds: np.ndarray, *,
                             metric: str = "cosine") -> np.ndarray:
    """Pairwise distances between treatment profiles, infinite between treatments of the
    same compound (NSC: a treatment's neighbours are always other compounds')."""
    dist = cdist(profiles, profiles, metric=metric)
    dist[compounds[:, None] == compounds[None, :]] = np.inf
    return dist


def knn_scores(distances: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """kNN nonconformity (n, n_classes) under NSC from :func:`other_compound_distances`:
    distance to the nearest treatment of the class over distance to the nearest of another
    class, among labelled treatments only (``labels`` >= 0)."""
    # Unlabelled (or held-out) treatments are no references.
    dist = np.where(labels[None, :] < 0, np.inf, distances)
    scores = np.empty((len(distances), n_classes))
    for c in range(n_classes):
        same = np.where(labels[None, :] == c, dist, np.inf).min(axis=1)
        other = np.where((labels[None, :] != c) & (labels[None, :] >= 0), dist,
                         np.inf).min(axis=1)
        scores[:, c] = same / np.maximum(other, 1e-12)
    return np.where(np.isfinite(scores), scores, 1e12)


def conformal_from_profiles(treatments: pd.DataFrame, *, metric: str = "cosine",
                            confidences: Sequence[float] = CONFIDENCES, scheme: str = "auto",
                            seed: int = 0) -> ConformalResult:
    """Conformal nearest-neighbour classification of treatment profiles under NSC.

    The nonconformity of treatment *i* for MoA *c* is its distance to the nearest treatment
    of MoA *c* over its distance to the nearest treatment of another MoA, neighbours always
    from other compounds (Shafer & Vovk 2008's kNN score, with the NSC hold-out). MoAs with a
    single compound can never be matched and are left out, as in 1-NN evaluation.
    """
    lab = sc.treatments(treatments)
    dropped = single_compound_moas(lab)
    lab = lab[~lab[sc.MOA].isin(dropped)].reset_index(drop=True)
    classes = sorted(lab[sc.MOA].astype(str).unique())
    if len(classes) < 2:
        raise CellmorphError("conformal nearest-neighbour prediction needs two MoAs with two "
                             "compounds each")
    labels = np.array([classes.index(str(m)) for m in lab[sc.MOA]])
    compound = lab[sc.COMPOUND].astype(str).to_numpy()
    scores = knn_scores(other_compound_distances(sc.to_matrix(lab), compound, metric=metric),
                        labels, len(classes))
    calibrated = calibrate_by_group(scores, labels, compound, len(classes), seed)
    notes = {"metric": metric, "holdout": "nsc"}
    if dropped:
        notes["dropped_moas"] = dropped
    return _result(f"nearest neighbours ({metric}, NSC)", lab, classes, calibrated, confidences,
                   scheme, notes)
