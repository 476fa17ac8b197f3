"""Weak labels (compound or treatment, no MoA) and embeddings of trained networks as profiles,
on a very small SYNTHETIC BBBC021 set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from cellmorph import schema as sc
from cellmorph.api import embed, evaluate, explain, export, report, train
from cellmorph.atomic import write_parquet
from cellmorph.backbones import create_backbone
from cellmorph.cli import main
from cellmorph.config import ProfileConfig, load_config
from cellmorph.errors import CellmorphError
from cellmorph.profiling.fold_models import FoldEmbedders, standardise_on, swapping_weights
from cellmorph.profiling.screen import make_embedder
from cellmorph.training.fold_jobs import plate_balanced_weights

# Tiny fields: one 32-pixel tile each, none dropped; stem and stages 1-5 frozen, trunk cached.
TINY = dict(model="tf_efficientnet_lite0", preset="fast", epochs=1, freeze_stages=5,
            cached_trunk=True, precision="fp32", preprocess={"grid": [1, 1], "tile_size": 32,
                                           "illumination": False, "drop_empty": False})
EVALUATE = dict(map=False, conformal=False, novelty=False, normalize_by="global")



@pytest.fixture(scope="module")
def tiny021(tiny021_six: Path) -> Path:
    """Six plates are enough here (see conftest), and a third of the work."""
    return tiny021_six

@pytest.fixture(scope="module")
def weak_run(tiny021: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("weak") / "run"
    return out, train(index=tiny021, output=out, label="compound", progress=False, **TINY)


def test_weak_labels_never_read_the_moa(weak_run, tiny021: Path, tmp_path: Path) -> None:
    """The same screen with every MoA label removed (its treatments unlabelled) trains the
    very same network: nothing of Metadata_MoA reaches a weakly supervised run."""
    folder, result = weak_run
    index = pd.read_parquet(tiny021)
    treated = index[sc.ROLE] == sc.ROLE_TREATMENT
    assert treated.any() and index.loc[treated, sc.MOA].notna().all()
    unlabelled = index.assign(**{sc.MOA: None}).copy()
    unlabelled.loc[treated, sc.ROLE] = sc.ROLE_UNLABELLED
    write_parquet(unlabelled, tmp_path / "no-moa.parquet")
    again = train(index=tmp_path / "no-moa.parquet", output=tmp_path / "run", label="compound",
                  progress=False, **TINY)
    assert result.classes == again.classes == sorted(index.loc[~index[sc.ROLE].eq(
        sc.ROLE_CONTROL), sc.COMPOUND].unique())
    first, second = load_file(str(result.models[0])), load_file(str(again.models[0]))
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert (folder / "training.json").is_file() and (folder / "training_loss.png").is_file()
    assert load_config(folder / "config.yaml", type(result.config)).sampling == "plate-balanced"


def test_weak_embedding_goes_through_evaluate_report_and_export(weak_run, tmp_path) -> None:
    folder, result = weak_run
    profiles = embed(folder, progress=False)
    assert Path(profiles.config.weights) == result.models[0]
    assert sc.feature_columns(profiles.wells)[0].startswith("Feature_rgb_")
    scored = evaluate(folder / "embed", output=folder / "embed" / "evaluation", **EVALUATE)
    assert scored.nn_result("nsc", "cosine").n_treatments == len(profiles.treatments)
    page = report(folder / "embed", output=tmp_path / "report.html")
    assert "NSC 1-NN confusion" in page.html and page.path.is_file()  # as a profile run's
    assert export(folder / "embed" / "profiles_well.parquet", tmp_path / "w.h5ad").is_file()
    with pytest.raises(CellmorphError, match="weakly supervised"):
        report(folder)  # its profiles are what to report
    again = embed(folder, output=tmp_path / "again", progress=False)  # the same profiles
    pd.testing.assert_frame_equal(again.wells, profiles.wells)
    shown = explain(folder, steps=2, size=32, filters=1, progress=False)
    assert list(shown.actmax) == ["pretrained", "weakly supervised (compound)"]
    assert not shown.crops  # no MoA predicted, so no Grad-CAM of one


def test_loco_embedding_uses_the_fold_model_that_never_saw_the_compound(tiny021: Path,
                                                                          tmp_path) -> None:
    """Every labelled compound is embedded by its own fold's model, whose training set left
    it out (read back from that fold's own test predictions); everything else by the first
    fold's, whose training never held controls or unlabelled compounds either."""
    run = tmp_path / "loco"
    train(index=tiny021, output=run, progress=False, **TINY)
    profiles = embed(run, progress=False)
    fold_models = profiles.config.fold_models
    images = profiles.images
    labelled = images[sc.ROLE] == sc.ROLE_TREATMENT
    assert (images.loc[labelled, sc.FOLD] == images.loc[labelled, sc.COMPOUND]).all()
    assert set(images.loc[~labelled, sc.FOLD]) == {min(fold_models)}
    for fold, weights in fold_models.items():
        held_out = pd.read_parquet(Path(weights).parent / "predictions.parquet")
        assert set(held_out[sc.COMPOUND]) == {fold}  # the fold trained on everything else
    assert sc.FOLD in profiles.treatments.columns
    scored = evaluate(profiles, **EVALUATE)
    assert scored.nn_result("nscb", "cosine").n_treatments > 0


class _Model:
    """A stand-in network: each tile's features are its mean and the model's id."""

    def __init__(self, path: Path) -> None:
        self.id = float(Path(path).stem)

    def __call__(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        mean = tiles.reshape(len(tiles), -1).mean(axis=1)
        return np.stack([mean, mean * self.id], axis=1).astype(np.float32)


def test_fold_embedders_route_each_row_and_centre_each_model_on_its_controls() -> None:
    table = pd.DataFrame({sc.COMPOUND: ["a", "b", "DMSO", "DMSO", "x"],
                          sc.ROLE: ["treatment", "treatment", "control", "control",
                                    "unlabelled"], sc.PLATE: "p"})
    tiles = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8)
    made: list[float] = []
    embedders = FoldEmbedders(lambda p: made.append(float(Path(p).stem)) or _Model(p),
                              {"a": Path("2.st"), "b": Path("3.st")}, Path("2.st"),
                              sc.COMPOUND)
    assert embedders.routes(table).tolist() == ["a", "b", "a", "a", "a"]
    feats = embedders(tiles, table=table)
    controls = table[sc.ROLE].eq("control").to_numpy()
    for model, rows in ((2.0, [0, 2, 3, 4]), (3.0, [1])):
        own = _Model(Path(f"{model:g}.st"))(tiles[rows + [2, 3]])
        expected = standardise_on(own, controls[rows + [2, 3]])[: len(rows)]
        np.testing.assert_allclose(feats[rows], expected, rtol=1e-6)
    assert sorted(made) == [2.0, 3.0]  # each model once for the plate
    with pytest.raises(CellmorphError, match="no control tiles"):
        embedders(tiles[:2], table=table.iloc[:2])


def test_swapping_weights_into_one_network_embeds_as_building_each(tmp_path) -> None:
    """One network with each fold's weights loaded in turn gives the features of a network
    built from each file."""
    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = create_backbone("tf_efficientnet_lite0", "random", num_classes=3)
        files.append(tmp_path / f"{seed}.safetensors")
        save_file(model.state_dict(), str(files[-1]))
    channels = ["DAPI", "Tubulin", "Actin"]
    cfg = ProfileConfig(index="i.parquet", output=tmp_path, weights=str(files[0]),
                        channel_mode="rgb", fold_batchnorm=False, precision="fp32")
    swap = swapping_weights(make_embedder(cfg, channels))
    tiles = np.random.default_rng(0).integers(0, 255, (4, 3, 32, 32), dtype=np.uint8)
    for path in (files[1], files[0], files[1]):
        built = make_embedder(cfg.model_copy(update={"weights": str(path)}), channels)
        np.testing.assert_allclose(swap(path)(tiles), built(tiles), rtol=1e-5, atol=1e-6)


def test_plate_balanced_draw_weighs_labels_and_their_plates_alike() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    plates = np.array(["p1", "p2", "p2", "p2", "p1", "p1"])
    weights = plate_balanced_weights(labels, plates)
    np.testing.assert_allclose(weights.sum(), 1.0)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    assert weights[0] == pytest.approx(weights[1:4].sum())  # p1 and p2 weigh alike


def test_several_profile_sets_are_compared_in_one_table(weak_run, tmp_path, capsys) -> None:
    folder, _ = weak_run
    embed(folder, output=tmp_path / "again", progress=False)
    assert main(["evaluate", str(folder / "embed"), str(tmp_path / "again"), "--no-map",
                 "--normalize-by", "global"]) == 0
    table = capsys.readouterr().out.splitlines()[-3:]
    assert table[0].split() == ["profiles", "NSC", "NSCB", "mAP", "treatments"]
    assert table[1].split()[1:] == table[2].split()[1:]  # the same model, the same numbers
    assert (tmp_path / "again" / "evaluation" / "metrics.json").is_file()
    assert main(["evaluate", "a/x.parquet", "a/y.parquet"]) == 2  # one evaluation folder
    assert "the same folder" in capsys.readouterr().err


def test_a_relative_run_folder_from_the_command_line(tiny021: Path, tmp_path, monkeypatch,
                                                    capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--index", str(tiny021), "-o", "weak", "--model",
                 "tf_efficientnet_lite0", "--label", "treatment", "--controls", "class",
                 "--preset", "fast", "--epochs", "1", "--freeze-stages", "5",
                 "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "weakly supervised by treatment" in printed and "controls as a class" in printed
    saved = json.loads((tmp_path / "weak" / "training.json").read_text())
    assert saved["models"]["0"].startswith("seed0/folds/all-")
    assert main(["embed", "weak"]) == 0 and (tmp_path / "weak" / "embed").is_dir()


def test_embed_refuses_what_it_cannot_embed(tiny021: Path, tmp_path, capsys) -> None:
    partial = tmp_path / "partial"
    train(index=tiny021, output=partial, folds=["emetine"], progress=False, **TINY)
    assert main(["embed", str(partial)]) == 2
    assert "no model for fold(s)" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "absent")]) == 2
    with pytest.raises(CellmorphError, match="needs MoA labels"):
        train(index=tiny021, output=tmp_path / "x", label="treatment", novelty=True,
              progress=False, **TINY)
