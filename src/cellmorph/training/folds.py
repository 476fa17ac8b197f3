"""Cross-validation folds by group: leave-one-compound-out (BBBC021), leave-one-cell-line-out
(BBBC014), or any ``Metadata_`` column of an index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellmorph import schema as sc
from cellmorph.errors import CellmorphError


@dataclass(frozen=True)
class Fold:
    """One fold: the held-out group and the boolean masks of training and test rows."""

    name: str
    train: np.ndarray
    test: np.ndarray


def make_folds(table: pd.DataFrame, by: str = sc.COMPOUND,
               only: list[str] | None = None, *, unseen_classes: bool = False) -> list[Fold]:
    """One fold per value of ``by`` among labelled rows of ``table`` (tiles or fields).

    Controls and unlabelled rows are in no fold. Raises if a class would have no training
    data in some fold (e.g. an MoA with a single compound under leave-one-compound-out),
    unless ``unseen_classes`` asks for exactly that (leave-one-MoA-out novelty folds).
    """
    if by not in table.columns:
        raise CellmorphError(f"cannot make folds by {by!r}: the index has no such column")
    is_lab = sc.is_treatment(table).to_numpy()
    groups = table[by].astype(str).to_numpy()
    lab = sc.treatments(table)
    if lab.empty:
        raise CellmorphError("no labelled treatments to train on")
    moas = sorted(lab[sc.MOA].astype(str).unique())
    if len(moas) < 2:
        raise CellmorphError(f"only one MoA class ({moas[0]!r}) is labelled: a classifier "
                             "would be trivially 100 % accurate; label at least two MoAs")
    if by == sc.COMPOUND:
        n = lab.groupby(sc.MOA)[sc.COMPOUND].nunique()
        single = sorted(n.index[n < 2])
        if single:
            raise CellmorphError(
                f"MoA(s) {single} have fewer than two compounds: leave-one-compound-out "
                "would leave no training data for them; add compounds or drop these MoAs")
    names = sorted(lab[by].astype(str).unique())
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            shown = ", ".join(names[:60]) + (" ..." if len(names) > 60 else "")
            raise CellmorphError(f"fold(s) {unknown} do not exist; the folds are the values of "
                                 f"{by}: {shown}")
        names = [n for n in names if n in set(only)]
    moa = table[sc.MOA].astype(str).to_numpy()
    folds = []
    for name in names:
        test = is_lab & (groups == name)
        train = is_lab & (groups != name)
        missing = sorted(set(moa[test]) - set(moa[train]))
        if missing and not unseen_classes and by == sc.MOA:
            raise CellmorphError("folds by Metadata_MoA leave each MoA out of its own training "
                                 "set, so no prediction can be right; to measure how unseen "
                                 "MoAs are flagged, keep fold_by: Metadata_Compound and set "
                                 "novelty: true (it adds a leave-one-MoA-out fold per MoA)")
        if missing and not unseen_classes:
            raise CellmorphError(f"fold {name!r} has no training data for class(es) {missing}; "
                                 "every class needs examples outside each held-out group")
        folds.append(Fold(name, train, test))
    return folds
