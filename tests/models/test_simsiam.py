"""SimSiam's architecture and ablation switches, checked against the paper and the official code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.config import ModelConfig
from toolkit.errors import ToolkitError
from toolkit.losses.simsiam import simsiam_loss
from toolkit.models.backbones import build_backbone
from toolkit.models.heads import predictor, projector
from toolkit.models.simsiam import SimSiam

SMALL = ModelConfig(backbone="convnet", width=8, dim=32)


def layer_types(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq]


def test_projector_three_layers_matches_official_code() -> None:
    proj = projector(16, 64, 32, layers=3, bn="all")
    assert layer_types(proj) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 64), (64, 64), (64, 32)]
    assert all(m.bias is None for m in linears)  # no bias before a BN
    assert proj[-1].affine is False  # output BN without affine (official code)


def test_projector_two_layers_cifar_setting() -> None:
    assert layer_types(projector(16, 64, 32, layers=2)) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    with pytest.raises(ToolkitError, match="proj_layers must be 2 or 3"):
        projector(16, 64, 32, layers=4)


def test_predictor_is_a_bottleneck_with_bn_on_hidden_only() -> None:
    pred = predictor(32, 8, bn="hidden")
    assert layer_types(pred) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (pred[0].in_features, pred[0].out_features, pred[3].out_features) == (32, 8, 32)
    assert pred[0].bias is None and pred[3].bias is not None


@pytest.mark.parametrize("bn, proj_bns, pred_bns", [("none", 0, 0), ("hidden", 1, 1), ("all", 2, 2)])
def test_batchnorm_placement_switch(bn: str, proj_bns: int, pred_bns: int) -> None:
    count = lambda seq: sum(isinstance(m, nn.BatchNorm1d) for m in seq)  # noqa: E731
    assert count(projector(16, 16, 16, layers=2, bn=bn)) == proj_bns
    assert count(predictor(16, 4, bn=bn)) == pred_bns
    with pytest.raises(ToolkitError, match="valid: none, hidden, all"):
        projector(16, 16, 16, bn="some")


@pytest.mark.parametrize("name, feat", [("convnet", 8), ("resnet18", 512), ("resnet50", 2048)])
def test_backbone_output_dims(name: str, feat: int) -> None:
    net, dim = build_backbone(name, in_channels=1, cifar_stem=True, width=8)
    assert dim == feat
    assert net.eval()(torch.randn(2, 1, 32, 32)).shape == (2, feat)


def test_cifar_stem_replaces_conv1_and_maxpool() -> None:
    net, _ = build_backbone("resnet18", cifar_stem=True)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ToolkitError, match="unknown backbone 'vgg'; valid: convnet, resnet18, resnet34, resnet50"):
        build_backbone("vgg")


def test_forward_shapes_and_default_dims() -> None:
    model = SimSiam(SMALL)
    out = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    assert all(t.shape == (4, 32) for t in out)
    assert model.predictor[0].out_features == 8  # d / 4


def test_stop_gradient_targets_carry_no_graph() -> None:
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    out = SimSiam(SMALL)(x1, x2)
    assert not out.z1.requires_grad and not out.z2.requires_grad
    assert out.p1.requires_grad
    out_nosg = SimSiam(ModelConfig(backbone="convnet", width=8, dim=32, stop_gradient=False))(x1, x2)
    assert out_nosg.z1.requires_grad and out_nosg.z2.requires_grad


def test_stop_gradient_gradient_equals_loss_with_constant_targets() -> None:
    """With sg, dL/dtheta equals the gradient of the loss whose targets are precomputed constants."""
    torch.manual_seed(0)
    model = SimSiam(ModelConfig(backbone="convnet", width=8, dim=32))
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    out = model(x1, x2)
    simsiam_loss(*out).backward()
    got = [p.grad.clone() for p in model.backbone.parameters()]
    model.zero_grad()
    with torch.no_grad():  # targets as constants: same train-mode BN statistics, no graph
        c1, c2 = model.encode(x1), model.encode(x2)
    z1, z2 = model.encode(x1), model.encode(x2)
    p1, p2 = model.predictor(z1), model.predictor(z2)
    ref = -0.5 * (F.cosine_similarity(p1, c2).mean() + F.cosine_similarity(p2, c1).mean())
    ref.backward()
    for g, r in zip(got, (p.grad for p in model.backbone.parameters())):
        assert torch.allclose(g, r, atol=1e-6)


def test_no_stop_gradient_sends_gradient_through_targets() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="convnet", width=8, dim=32, predictor="none")
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    grads = {}
    for sg in (True, False):
        torch.manual_seed(0)
        model = SimSiam(ModelConfig(**{**cfg.__dict__, "stop_gradient": sg}))
        simsiam_loss(*model(x1, x2)).backward()
        grads[sg] = torch.cat([p.grad.flatten() for p in model.projector.parameters() if p.grad is not None])
    # predictor none: L = -cos(z1, z2) either way; sg keeps one of the two symmetric paths per term,
    # so the full gradient is exactly twice the stop-gradient one.
    assert torch.allclose(grads[False], 2 * grads[True], atol=1e-6)


def test_predictor_none_and_fixed_random() -> None:
    none = SimSiam(ModelConfig(backbone="convnet", width=8, dim=32, predictor="none"))
    assert isinstance(none.predictor, nn.Identity)
    out = none(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    assert torch.equal(out.p1.detach(), out.z1)  # p = z

    with pytest.raises(ToolkitError, match="model.predictor"):
        SimSiam(ModelConfig(predictor="weird"))


def test_fixed_random_predictor_stays_fixed_while_the_rest_trains(tmp_path: Path) -> None:
    """Table 1b: the training loop (its param groups, SGD with momentum and weight decay, fix_pred_lr)
    must leave a fixed predictor exactly as initialised and still train every other weight."""
    from tests.tiny_runs import tiny_trainer

    trainer, objective = tiny_trainer(tmp_path, {"model.predictor": "fixed_random", "optim.weight_decay": 0.1,
                                                 "optim.fix_pred_lr": True, "optim.base_lr": 2.0})
    model = objective.model
    assert any(n.startswith("predictor.") for n, _ in model.named_parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.sampler.set_plan(objective.plan(1))
    for step, batch in enumerate(trainer.loader):
        trainer._set_lr(1, step)
        trainer.train_step(batch)
    after = dict(model.named_parameters())
    for name, value in before.items():
        if name.startswith("predictor."):
            assert torch.equal(value, after[name]), name  # not even weight decay touched it
    trainable = [n for n, p in after.items() if not n.startswith("predictor.") and p.requires_grad and n.endswith("weight")]
    assert len(trainable) >= 4
    assert all(not torch.equal(before[n], after[n]) for n in trainable)
