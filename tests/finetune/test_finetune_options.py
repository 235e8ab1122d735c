"""Fine-tuning options of issue 16: penultimate features, raw ProtoNet embeddings, Adam, the
auxiliary SimSiam loss and ``--refit``. Each is checked against what the paper or a hand
computation says, on the tiny digits runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.tiny_runs import pretrain_at_init, tiny_recipe
from toolkit.config import load_recipe
from toolkit.data.merge import with_validation_in_train
from toolkit.data.store import load_data
from toolkit.engine.checkpoint import Checkpoint, build_training_model
from toolkit.engine.distributed import seed_everything
from toolkit.finetune import finetune
from toolkit.models.encoder import Encoder
from toolkit.refit import chosen_epochs

PROTO = {"finetune.loss": "proto", "finetune.way": 5, "finetune.shot": 1, "finetune.query": 3,
         "finetune.epochs": 2, "train.precision": "fp32"}


def _recipe(tmp_path: Path, **overrides):
    return load_recipe(str(tiny_recipe(tmp_path)), {**PROTO, "finetune.init": "none", **overrides})


def test_encoder_raw_and_auxiliary_outputs_follow_their_definitions() -> None:
    """normalise=False is head(backbone(x)); the auxiliary loss is SimSiam's Eq. (1)-(4) on the two views."""
    recipe = load_recipe(None, {"model.width": 8, "model.dim": 32, "finetune.embedding_dim": 16, "finetune.aux": "simsiam",
                                "data.channels": 1})
    seed_everything(0)
    model: Encoder = build_training_model(recipe, "finetune").eval()  # type: ignore[assignment]
    x1, x2 = torch.rand(6, 1, 16, 16), torch.rand(6, 1, 16, 16)
    raw = model(x1, normalise=False)
    assert torch.allclose(raw, model.head(model.backbone(x1)).float())
    assert torch.allclose(model(x1), raw / raw.norm(dim=1, keepdim=True), atol=1e-6)
    embeddings, aux = model(x1, second_view=x2)
    z1, z2 = model.aux.projector(model.backbone(x1)), model.aux.projector(model.backbone(x2))
    p1, p2 = model.aux.predictor(z1), model.aux.predictor(z2)
    by_hand = -0.5 * (sum((p1[i] @ z2[i]) / (p1[i].norm() * z2[i].norm()) for i in range(6)) / 6
                      + sum((p2[i] @ z1[i]) / (p2[i].norm() * z1[i].norm()) for i in range(6)) / 6)
    assert torch.allclose(aux, by_hand, atol=1e-5)
    assert torch.allclose(embeddings, model(x1))


def test_backbone_features_are_what_the_checkpoint_deploys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """finetune.features=backbone: the trained head is dropped, the model embeds l2-normalised backbone features."""
    run = tmp_path / "ft"
    finetune(_recipe(tmp_path, **{"finetune.features": "backbone", "finetune.embedding_dim": 16}), run)
    said = capsys.readouterr()
    assert "kNN top-1 of the backbone features on the validation split" in said.out + said.err  # what the monitor read
    ckpt = Checkpoint.load(run)
    assert ckpt.features == "backbone"
    encoder = ckpt.encoder()
    x = torch.rand(4, 1, 16, 16)
    trained = build_training_model(ckpt.recipe, "finetune").eval()
    trained.load_state_dict(ckpt.weights)
    expected = F.normalize(trained.backbone(x).float(), dim=1)
    assert ckpt.embedding_dim == expected.shape[1] != 16  # the backbone's width, not the head's 16
    assert torch.allclose(encoder(x), expected, atol=1e-6)
    assert any(k.startswith("head.") for k in ckpt.weights)  # the head trained, but is not deployed


def test_no_head_trains_the_backbone_directly_with_adam_on_raw_embeddings(tmp_path: Path) -> None:
    """embedding_dim=0 (Snell et al.'s ProtoNet): no head weights; Adam's moments are in the checkpoint."""
    run = tmp_path / "ft"
    finetune(_recipe(tmp_path, **{"finetune.embedding_dim": 0, "finetune.optimizer": "adam",
                                  "finetune.proto_distance": "euclidean", "finetune.base_lr": 0.01}), run)
    ckpt = Checkpoint.load(run)
    assert not any(k.startswith("head.") for k in ckpt.weights)
    assert ckpt.features == "backbone"
    state = ckpt.training.optimizer["state"]
    assert state and all("exp_avg_sq" in s for s in state.values())  # Adam, not SGD's momentum buffer


def test_euclidean_proto_step_uses_raw_embeddings_as_snell_et_al(tmp_path: Path) -> None:
    """The step's loss equals Eq. 2 computed by hand on the un-normalised embeddings of the episode."""
    from toolkit.data.preprocess import Normalizer
    from toolkit.engine.distributed import DistEnv
    from toolkit.finetune import FinetuneObjective

    recipe = _recipe(tmp_path, **{"finetune.embedding_dim": 0, "finetune.proto_distance": "euclidean"})
    loaded = load_data(recipe.data)
    seed_everything(0)
    objective = FinetuneObjective(recipe, loaded.train, DistEnv(0, 1, 0, torch.device("cpu")))
    model = objective.model.eval()
    way, shot, query = 5, 1, 3
    classes = sorted(set(loaded.train.labels.tolist()))[:way]
    index = [i for c in classes for i in [j for j, label in enumerate(loaded.train.labels) if label == c][:shot + query]]
    x = loaded.train.images[torch.tensor(index)]
    labels = torch.as_tensor(loaded.train.labels[index])
    normalizer = Normalizer([0.5], [0.25], torch.device("cpu"))
    loss = objective.step(model, (x, labels), normalizer).loss
    raw = model.backbone(normalizer(x)).float().view(way, shot + query, -1)
    prototypes = raw[:, :shot].mean(1)
    total = 0.0
    for c in range(way):
        for q in range(query):
            d = ((raw[c, shot + q] - prototypes) ** 2).sum(1)
            total += -torch.log_softmax(-d, dim=0)[c]
    assert torch.allclose(loss, total / (way * query), rtol=1e-4)


def test_aux_simsiam_starts_from_the_pretraining_heads_and_trains_them(tmp_path: Path) -> None:
    init = pretrain_at_init(tmp_path, seed=3)
    run = tmp_path / "ft"
    finetune(_recipe(tmp_path, **{"finetune.init": str(init), "finetune.aux": "simsiam", "finetune.aux_weight": 0.5}), run)
    start, end = Checkpoint.load(init).weights, Checkpoint.load(run).weights
    for part in ("projector", "predictor"):
        keys = [k for k in start if k.startswith(f"{part}.") and "running" not in k and "num_batches" not in k]
        assert keys
        assert any(not torch.equal(start[k], end[f"aux.{k}"]) for k in keys)  # trained
        assert all(start[k].shape == end[f"aux.{k}"].shape for k in keys)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(-1.0 <= r["aux_loss"] <= 1.0 for r in records)
    deployed = Checkpoint.load(run).encoder()
    assert not hasattr(deployed, "aux")  # the auxiliary branch is not part of the model


def test_refit_trains_on_train_plus_validation(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **{"finetune.refit": True})
    loaded = load_data(recipe.data)
    assert loaded.val is not None
    merged = with_validation_in_train(loaded)
    assert len(merged.train) == len(loaded.train) + len(loaded.val) and merged.val is None
    names = merged.train.class_names
    assert sorted(names[i] for i in merged.train.labels[len(loaded.train):]) == sorted(
        loaded.val.class_names[i] for i in loaded.val.labels)
    run = tmp_path / "ft"
    finetune(recipe, run)
    assert not (run / "selection").exists()  # no early stopping: nothing to choose, one run
    ckpt = Checkpoint.load(run)
    assert ckpt.recipe.finetune.refit and ckpt.epoch == 2


def test_refit_with_early_stopping_chooses_on_a_selection_run(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **{"finetune.refit": True, "finetune.early_stop_patience": 1, "finetune.epochs": 3})
    run = tmp_path / "ft"
    finetune(recipe, run)
    selection = [json.loads(line) for line in (run / "selection" / "metrics.jsonl").read_text().splitlines()]
    expected = chosen_epochs(selection, 1, 3)
    assert Checkpoint.load(run).epoch == expected
    assert Checkpoint.load(run).recipe.finetune.early_stop_patience == 0


def test_chosen_epochs_is_the_earliest_best_monitored_epoch() -> None:
    records = [{"epoch": 0, "knn_top1": 0.9}, {"epoch": 1, "knn_top1": 0.5}, {"epoch": 2, "knn_top1": 0.7},
               {"epoch": 3, "knn_top1": None}, {"epoch": 4, "knn_top1": 0.7}, {"epoch": 5, "knn_top1": 0.6}]
    assert chosen_epochs(records, patience=2, planned=9) == 2  # epoch 0 (no training) is not a choice
    assert chosen_epochs(records, patience=0, planned=9) == 9
    from toolkit.errors import ToolkitError

    with pytest.raises(ToolkitError, match="no validation knn_top1"):
        chosen_epochs([{"epoch": 1}], patience=1, planned=3)
