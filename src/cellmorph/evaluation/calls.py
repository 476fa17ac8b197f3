"""Answers for the compounds nobody labelled: each unlabelled treatment gets a call, a
conformal set at each confidence calibrated on the labelled compounds (the same score and
scheme the run validates, so a set is as trustworthy as the validity table says), a novelty
verdict ("none of these": see below) and its nearest labelled treatments. Controls are never
called.

Two routes, one table (:class:`Calls`):

- *profiles* (:func:`call_unknowns`): the call is the MoA of the nearest labelled treatment;
  the references are every labelled treatment (a query was never labelled, so nothing needs
  holding out); the calibration scores are those of the NSC evaluation, each labelled
  treatment scored against the other compounds, as a query is.
- *classifier* (:func:`call_from_probabilities`, LOCO runs): every fold model predicts the
  unknowns (none saw them) and their treatment probabilities are the median over the fold
  models, renormalised, as Kensert et al. aggregate; the call is the argmax, and the sets
  are calibrated on the labelled treatments' out-of-fold probabilities (hinge score). The
  nearest labelled treatments are those with the closest probability vectors.

Novelty has two signs, either of which makes the verdict "none of these": the set at the
novelty confidence is empty (no MoA fits), or the treatment is atypical of the labelled
ones: ``Novelty_P``, a conformal p-value of its distance to the nearest labelled treatment
(classifier: one minus its top probability) against the labelled treatments' own, each to
the nearest treatment of another compound, is at most one minus the novelty confidence. The
first sign alone misses a new mechanism: the kNN score is a ratio (nearest of a class over
nearest of another), small for the nearest class however far it is, so a set is rarely
empty. The second says how far, and a known compound is flagged by it at about the rate
the confidence allows (``labelled_false_alarm``, measured the same way).

Each route also measures itself on the labelled treatments, scored as a query is (each
against the other compounds): the top-1 accuracy, every set's coverage and the novelty
false-alarm rate, which the summary puts beside the calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError
from cellmorph.evaluation.conformal import (
    calibrate_by_group,
    conformal_from_probabilities,
    knn_scores,
    other_compound_distances,
    schemes_used,
)
from cellmorph.evaluation.knn import single_compound_moas
from cellmorph.records import ShortRepr

CALL, CALL_DISTANCE, CALL_PROBABILITY = "Call_MoA", "Call_Distance", "Call_Probability"
NOVEL, NOVELTY_P = "None_Of_These", "Novelty_P"
DOSES_AGREE = "Doses_Agree"  # every dose of the compound got the same call (empty: one dose)
CALLS_FILE = "calls_treatment.csv"  # the table's name in a run or evaluation folder
NEIGHBOURS = 3
TOO_FEW = ("calls for unlabelled compounds need two labelled MoAs with two compounds each to "
           "calibrate on")
NOT_CALLED = ("their compound is labelled at other doses, and no set was calibrated for a "
              "compound's own other doses")
PROFILES_ROUTE = "nearest labelled treatment (profiles)"
CLASSIFIER_ROUTE = "median over the fold models (classifier)"
REFIT_ROUTE = "one model refitted on every labelled compound (classifier)"


@dataclass(frozen=True)
class CallsSummary:
    """How many unknowns were called, and how far the run's own labelled treatments say the
    calls can be trusted: top-1 accuracy and each set's coverage, scored as a query is."""

    route: str
    n_treatments: int
    none_of_these: int
    labelled_accuracy: float
    confidences: list[float]
    labelled_coverage: list[float]
    labelled_false_alarm: float  # labelled treatments called "none of these", scored alike


@dataclass(repr=False)
class Calls(ShortRepr):
    """The calls table (one row per unlabelled treatment) and what backs it."""

    table: pd.DataFrame
    route: str
    labelled_accuracy: float  # top-1 on the labelled treatments, each against the others
    labelled_coverage: dict[float, float] = field(default_factory=dict)  # per confidence
    labelled_false_alarm: float = 0.0  # labelled treatments that would be "none of these"
    not_called: list[str] = field(default_factory=list)  # unlabelled doses of labelled compounds

    @property
    def shown_confidence(self) -> float:
        """The confidence whose sets the terminal and the report show: 90 % where the run
        computed it, else its lowest."""
        return 0.9 if 0.9 in self.labelled_coverage else min(self.labelled_coverage)

    @property
    def shown_sets(self) -> str:
        """The table's column of the sets at :attr:`shown_confidence`."""
        return f"Set_{round(self.shown_confidence * 100):d}"

    def summary(self) -> CallsSummary:
        """Counts and the measured accuracy, coverage and false alarms, for metrics.json."""
        return CallsSummary(self.route, int(len(self.table)), int(self.table[NOVEL].sum()),
                            self.labelled_accuracy, list(self.labelled_coverage),
                            list(self.labelled_coverage.values()), self.labelled_false_alarm)


@dataclass(repr=False)
class ScreenCalls(ShortRepr):
    """A new screen's calls from a reference run (``cellmorph predict``)."""

    calls: Calls
    truth_accuracy: float | None  # calls right for the new screen's own labelled compounds
    n_truth: int  # how many of its treatments carry a label to check against
    notes: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def with_truth(calls: Calls, queries: pd.DataFrame, notes: dict | None = None,
               skipped: dict[str, str] | None = None) -> ScreenCalls:
    """A new screen's calls beside the labels its index carries (``Metadata_MoA`` of its
    ``treatment`` rows in ``queries``, keyed by treatment), kept only to check the calls."""
    truth = (queries[sc.MOA].where(queries[sc.ROLE] == sc.ROLE_TREATMENT)
             if {sc.ROLE, sc.MOA} <= set(queries.columns)
             else pd.Series(None, index=queries.index, dtype=object))
    by_treatment = dict(zip(queries[sc.TREATMENT].astype(str), truth, strict=True))
    table = calls.table
    table.insert(table.columns.get_loc(CALL), sc.MOA,
                 table[sc.TREATMENT].astype(str).map(by_treatment).to_numpy())
    known = table[sc.MOA].notna()
    accuracy = (float((table.loc[known, CALL] == table.loc[known, sc.MOA]).mean())
                if known.any() else None)
    return ScreenCalls(calls, accuracy, int(known.sum()), notes or {}, skipped or {})


def call_unknowns(labelled: pd.DataFrame, unknown: pd.DataFrame, *, metric: str = "cosine",
                  confidences: Sequence[float] = (0.8, 0.9, 0.95), scheme: str = "auto",
                  novelty_confidence: float = 0.9, seed: int = 0,
                  labelled_compounds: str = "skip") -> Calls:
    """Calls from profiles: one row per unknown treatment (call, sets, novelty, neighbours).

    ``labelled`` and ``unknown`` are treatment-level profiles (``Metadata_`` columns and the
    same features), normalised alike. MoAs with a single labelled compound cannot be
    calibrated (no other compound of theirs to score against) and are no candidates.
    ``labelled_compounds``: what an unknown treatment of a compound that is labelled among
    the references gets: ``skip`` (the same screen: not called, named in ``not_called``) or
    ``other`` (another screen, :func:`cellmorph.evaluation.profiles.call_screen`: called from
    the other compounds only, as NSC scores a labelled one).
    """
    not_called: list[str] = []
    if labelled_compounds == "skip":
        unknown, not_called = _unknown_compounds(labelled, unknown)
    lab = calibration_references(labelled)
    classes = sorted(lab[sc.MOA].astype(str).unique())
    if len(classes) < 2:
        raise CellmorphError(TOO_FEW)
    table = pd.concat([lab, unknown], ignore_index=True)
    labels = np.array([classes.index(str(m)) for m in lab[sc.MOA]] + [-1] * len(unknown))
    compounds = table[sc.COMPOUND].astype(str).to_numpy()
    dist = other_compound_distances(sc.to_matrix(table), compounds, metric=metric)
    scores = knn_scores(dist, labels, len(classes))
    calibrated = calibrate_by_group(scores, labels, compounds, len(classes), seed)
    levels = (*confidences, novelty_confidence)
    used = schemes_used(scheme, levels,
                        dict(zip(classes, map(int, calibrated.sizes), strict=True)))
    members = {conf: (calibrated.mondrian if used[conf] == "mondrian"
                      else calibrated.marginal) > 1 - conf for conf in levels}
    known = labels >= 0
    coverage = {conf: float(rows[known][np.arange(known.sum()), labels[known]].mean())
                for conf, rows in members.items()}
    # The 1-NN MoA of each labelled treatment among the other compounds is the argmin of its
    # kNN score (a distance ratio below 1 only for the nearest class).
    accuracy = float((scores[known].argmin(axis=1) == labels[known]).mean())
    # Each unknown to every reference (a reference of its own compound, only possible
    # across screens, is never its neighbour), and each reference to the other compounds'.
    distances = dist[np.ix_(~known, known)]
    nearest = distances.argmin(axis=1)
    among = dist[np.ix_(known, known)]
    typical = typicality(among.min(axis=1), compounds[known], distances.min(axis=1))
    empty = {conf: ~rows.any(axis=1) for conf, rows in members.items()}
    out = _calls_table(unknown, lab, classes,
                       {conf: rows[~known] for conf, rows in members.items()},
                       novelty_confidence, distances, typical.queries)
    out[CALL] = lab[sc.MOA].astype(str).to_numpy()[nearest]
    out.insert(out.columns.get_loc(CALL) + 1, CALL_DISTANCE,
               distances[np.arange(len(out)), nearest])
    false_alarm = _false_alarm(empty[novelty_confidence][known], typical.labelled,
                               novelty_confidence)
    return Calls(_doses_agree(out), PROFILES_ROUTE, accuracy, coverage, false_alarm,
                 not_called)


def call_from_probabilities(labelled: pd.DataFrame, unknown: pd.DataFrame, *,
                            confidences: Sequence[float] = (0.8, 0.9, 0.95),
                            scheme: str = "auto", novelty_confidence: float = 0.9,
                            seed: int = 0, labelled_compounds: str = "skip",
                            route: str = CLASSIFIER_ROUTE) -> Calls:
    """Calls from class probabilities (the classifier route).

    ``labelled``: the labelled treatments' out-of-fold ``Prob_<MoA>`` (a LOCO run's
    treatment table); ``unknown``: the unlabelled treatments' ``Prob_`` from models that
    never saw them, with the same columns; ``route`` names the models that made them.
    ``labelled_compounds`` as for
    :func:`call_unknowns` (``other``: another screen's treatments of a compound among
    ``labelled``, predicted by the model that held that compound out).

    Examples
    --------
    >>> import pandas as pd
    >>> lab = pd.DataFrame({"Metadata_Treatment": list("abcd"),
    ...     "Metadata_Compound": list("abcd"), "Metadata_MoA": ["x", "x", "y", "y"],
    ...     "Prob_x": [0.9, 0.8, 0.3, 0.1], "Prob_y": [0.1, 0.2, 0.7, 0.9]})
    >>> unk = pd.DataFrame({"Metadata_Treatment": ["u"], "Metadata_Compound": ["u"],
    ...     "Prob_x": [0.88], "Prob_y": [0.12]})
    >>> calls = call_from_probabilities(lab, unk, confidences=(0.5,), novelty_confidence=0.5)
    >>> calls.table[["Call_MoA", "Call_Probability", "Set_50", "Neighbour_1"]].values.tolist()
    [['x', 0.88, 'x', 'a']]
    >>> calls.labelled_accuracy
    1.0
    """
    not_called: list[str] = []
    if labelled_compounds == "skip":
        unknown, not_called = _unknown_compounds(labelled, unknown)
    if labelled[sc.MOA].nunique() < 2:
        raise CellmorphError(TOO_FEW)
    classes = sc.classes_of(labelled)
    levels = sorted({*confidences, novelty_confidence})
    table = pd.concat([labelled, unknown.assign(**{sc.MOA: ""})], ignore_index=True)
    conformal = conformal_from_probabilities(table, confidences=levels, scheme=scheme,
                                             seed=seed)
    validity = conformal.validity()
    overall = validity[validity["moa"] == "all"]
    coverage = dict(zip(overall["confidence"].astype(float), overall["coverage"].astype(float),
                        strict=True))
    members = {conf: conformal.members(conf)[len(labelled):] for conf in levels}
    columns = [f"{sc.PROB_PREFIX}{c}" for c in classes]
    probs, references = (t[columns].to_numpy(float) for t in (unknown, labelled))
    accuracy = float((np.asarray(classes)[references.argmax(axis=1)]
                      == labelled[sc.MOA].astype(str).to_numpy()).mean())
    typical = typicality(1 - references.max(axis=1),
                          labelled[sc.COMPOUND].astype(str).to_numpy(), 1 - probs.max(axis=1))
    distances = cdist(probs, references)
    # A reference of the query's own compound (another screen's) is never its neighbour.
    distances[unknown[sc.COMPOUND].astype(str).to_numpy()[:, None]
              == labelled[sc.COMPOUND].astype(str).to_numpy()[None, :]] = np.inf
    out = _calls_table(unknown, labelled.reset_index(drop=True), classes, members,
                       novelty_confidence, distances, typical.queries)
    out[CALL] = np.asarray(classes)[probs.argmax(axis=1)]
    out.insert(out.columns.get_loc(CALL) + 1, CALL_PROBABILITY, probs.max(axis=1))
    labelled_empty = ~conformal.members(novelty_confidence)[:len(labelled)].any(axis=1)
    false_alarm = _false_alarm(labelled_empty, typical.labelled, novelty_confidence)
    return Calls(_doses_agree(out), route, accuracy, coverage, false_alarm, not_called)


def _doses_agree(calls: pd.DataFrame) -> pd.DataFrame:
    """``Doses_Agree``: whether every dose of the row's compound got the same call (a
    compound whose doses disagree may act differently by dose, or be weak at some);
    empty for a compound with one dose."""
    if sc.COMPOUND not in calls.columns or calls.empty:
        return calls.assign(**{DOSES_AGREE: pd.Series(dtype=object)})
    by_compound = calls.groupby(sc.COMPOUND)[CALL]
    agree = by_compound.transform("nunique") == 1
    agree = agree.astype(object).where(by_compound.transform("size") > 1, None)
    return calls.assign(**{DOSES_AGREE: agree})


@dataclass(frozen=True)
class Typicality:
    """Conformal p-values of how typical a treatment's score is of the labelled ones'."""

    queries: np.ndarray  # each unknown against every labelled treatment
    labelled: np.ndarray  # each labelled one against the other compounds' (as a query is)


def typicality(labelled: np.ndarray, compounds: np.ndarray, queries: np.ndarray) -> Typicality:
    """p = (1 + #{labelled scores >= s}) / (n + 1): the conformal p-value of a score ``s``
    where higher is stranger (a distance, one minus a probability). Written here because
    crepes' conformal predictive systems want a regressor, not a bare score. A labelled
    treatment is scored against the other compounds' scores only, as its calibration was."""
    queries_p = (1 + (labelled[None, :] >= queries[:, None]).sum(axis=1)) / (len(labelled) + 1)
    others = compounds[:, None] != compounds[None, :]
    at_least = (labelled[None, :] >= labelled[:, None]) & others
    labelled_p = (1 + at_least.sum(axis=1)) / (others.sum(axis=1) + 1)
    return Typicality(queries_p, labelled_p)


def _false_alarm(empty_sets: np.ndarray, typicality: np.ndarray, confidence: float) -> float:
    """How often a labelled treatment would be called "none of these"."""
    return float((empty_sets | (typicality <= 1 - confidence)).mean())


def _calls_table(unknown: pd.DataFrame, references: pd.DataFrame, classes: Sequence[str],
                 members: dict[float, np.ndarray], novelty_confidence: float,
                 distances: np.ndarray, typicality: np.ndarray) -> pd.DataFrame:
    """The table both routes write: keys, the call (the route fills it in), a set per
    confidence, the novelty p-value and verdict, and the ``NEIGHBOURS`` nearest references."""
    out = unknown[[c for c in (sc.TREATMENT, sc.COMPOUND, sc.CONCENTRATION)
                   if c in unknown.columns]].reset_index(drop=True)
    out[CALL] = ""
    for conf in sorted(members):
        out[f"Set_{round(conf * 100):d}"] = ["; ".join(np.asarray(classes)[row])
                                             for row in members[conf]]
    out[NOVELTY_P] = typicality
    out[NOVEL] = ((out[f"Set_{round(novelty_confidence * 100):d}"] == "")
                  | (out[NOVELTY_P] <= 1 - novelty_confidence))
    nearest = np.argsort(distances, axis=1, kind="stable")
    for k in range(min(NEIGHBOURS, len(references))):
        ref = references.iloc[nearest[:, k]]
        out[f"Neighbour_{k + 1}"] = ref[sc.TREATMENT].to_numpy()
        out[f"Neighbour_{k + 1}_MoA"] = ref[sc.MOA].astype(str).to_numpy()
        out[f"Neighbour_{k + 1}_Distance"] = distances[np.arange(len(out)), nearest[:, k]]
    return out


def calibration_references(labelled: pd.DataFrame) -> pd.DataFrame:
    """The labelled treatments a call can be calibrated on: those of MoAs with two
    compounds or more."""
    return labelled[~labelled[sc.MOA].isin(single_compound_moas(labelled))].reset_index(
        drop=True)


def _unknown_compounds(labelled: pd.DataFrame, unknown: pd.DataFrame
                       ) -> tuple[pd.DataFrame, list[str]]:
    """The unknown treatments whose compound is labelled nowhere, and the others' names.

    An unlabelled dose of a labelled compound (BBBC021 labels only some doses of a compound)
    is no unknown compound: every reference set was scored without its compound's other
    treatments, so a set for it would claim a coverage nobody measured. It is not called, and
    the calls say which were left out. (A plate map that labels a compound in some rows only
    is refused when it is indexed.)"""
    known = set(labelled[sc.COMPOUND].astype(str))
    elsewhere = unknown[sc.COMPOUND].astype(str).isin(known).to_numpy()
    names = (unknown[sc.TREATMENT].astype(str)[elsewhere].tolist() if sc.TREATMENT in unknown
             else [])
    return unknown[~elsewhere].reset_index(drop=True), names
