"""What each part of an evaluation needs from a screen, said once: in ``cellmorph evaluate
--help``, the README, and every line that says why a part was skipped. (No imports: the
command line reads it to print its help without loading the evaluation.)"""

NEEDS = {
    "normalisation": "2 control wells on every plate (normalize_by: plate or plate-center) "
                     "or 2 in all (normalize_by: global)",
    "sphering": "3 control wells",
    "pca": "more control wells than components",
    "nsc": "2 labelled MoAs with 2 compounds each",
    "nscb": "2 labelled MoAs with 2 compounds each in 2 batches",
    "map_activity": "control wells and 2 wells of a treatment (or of a compound)",
    "map_consistency": "2 labelled MoAs with 2 compounds each",
    "conformal": "labelled treatments of several compounds per MoA",
    "novelty": "3 labelled MoAs",
    "distance_to_controls": "control wells",
    "dose": "a compound at 2 or more concentrations",
    "potency": "control wells and a compound at 4 or more concentrations",
    "plates": "control wells, and wells named by plate position (B07)",
    "percent_replicating": "treatments with 2 wells or more, of 2 treatments or more",
    "calls": "unlabelled treatments, and 2 labelled MoAs with 2 compounds each to calibrate on",
}

