"""The BN helpers: folding, freezing and fingerprinting, and the eval-mode behaviour serving relies on."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from models import (
    batchnorm_layers,
    bn_fingerprint,
    build_network,
    fold_batchnorm,
    freeze,
    model_bn_fingerprint,
)
from models.bn import BN_BUFFERS, training_bn_layers
from models.layers import BatchNormSpec, LinearSpec, StandardizeSpec
from tests.models.tiny_nets import KINDS, Trained


def _bn_count(net: nn.Module) -> int:
    return len(list(batchnorm_layers(net)))


@pytest.mark.parametrize(
    ("kind", "bn_left"),
    [("mlp_bn_before", 0), ("mlp_bn_after", 2), ("mlp_regression", 0), ("cnn", 0)],
)
def test_folded_network_gives_the_unfolded_eval_outputs(
    kind: str, bn_left: int, trained_nets: dict[str, Trained]
) -> None:
    trained = trained_nets[kind]
    folded = fold_batchnorm(trained.net)
    # BN right after a Linear/Conv2d is folded into it; BN after an activation has nothing to fold into.
    assert _bn_count(folded) == bn_left
    assert _bn_count(trained.net) == 2, "the original network keeps its BN layers"
    rows = torch.randn(64, trained.rows.shape[1]) * 3 + 2
    with torch.inference_mode():
        diff = (folded(rows) - trained.net(rows)).abs().max().item()
    assert diff <= 1e-5


def test_folding_leaves_bn_without_affine_parameters_as_eval_bn() -> None:
    torch.manual_seed(0)
    net = build_network(
        [
            StandardizeSpec(name="input_norm", num_features=3),
            LinearSpec(name="fc1", in_features=3, out_features=4),
            BatchNormSpec(
                name="bn1", type="BatchNorm1d", num_features=4, eps=1e-5, momentum=0.1, affine=False
            ),
            LinearSpec(name="head", in_features=4, out_features=2),
        ]
    )
    net.train()(torch.randn(16, 3) * 2 + 1)  # one step of running statistics
    freeze(net)
    folded = fold_batchnorm(net)
    rows = torch.randn(8, 3)
    with torch.inference_mode():
        torch.testing.assert_close(folded(rows), net(rows))


def test_freeze_puts_every_bn_in_eval_mode_with_no_grad(trained_nets: dict[str, Trained]) -> None:
    net = copy.deepcopy(trained_nets["cnn"].net).train()
    assert training_bn_layers(net) == ["bn1", "bn2"]
    assert freeze(net) is net
    assert training_bn_layers(net) == []
    assert not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())


def test_frozen_network_does_not_update_its_running_statistics(trained_nets: dict[str, Trained]) -> None:
    net = freeze(copy.deepcopy(trained_nets["cnn"].net).train())
    before = model_bn_fingerprint(net)
    net(torch.rand(16, 64) * 16)
    assert model_bn_fingerprint(net) == before


@pytest.mark.parametrize("kind", KINDS)
def test_eval_output_for_a_row_does_not_depend_on_the_other_rows_in_its_batch(
    kind: str, trained_nets: dict[str, Trained]
) -> None:
    trained = trained_nets[kind]
    row = trained.rows[:1]
    others = [trained.rows[1:8], trained.rows[8:40] * 5 - 3]
    with torch.inference_mode():
        alone = trained.net(row)
        for batch in others:
            torch.testing.assert_close(trained.net(torch.cat([row, batch]))[:1], alone)


def test_training_mode_output_does_depend_on_the_batch(trained_nets: dict[str, Trained]) -> None:
    """The contrast that gives the eval-mode test its meaning: BN left in training mode would leak."""
    net = copy.deepcopy(trained_nets["mlp_bn_before"].net).train()
    rows = trained_nets["mlp_bn_before"].rows
    with torch.no_grad():
        a = net(torch.cat([rows[:1], rows[1:8]]))[:1]
        b = net(torch.cat([rows[:1], rows[8:40] * 5 - 3]))[:1]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["mlp_bn_after", "cnn"])
def test_bn_fingerprint_changes_when_any_bn_buffer_changes(
    kind: str, trained_nets: dict[str, Trained]
) -> None:
    net = trained_nets[kind].net
    state = net.state_dict()
    bn_names = [name for name, _ in batchnorm_layers(net)]
    original = bn_fingerprint(state, bn_names)
    for key in [f"{name}.{buf}" for name in bn_names for buf in BN_BUFFERS]:
        changed = dict(state)
        changed[key] = state[key].clone()
        changed[key].view(-1)[-1] += 1
        assert bn_fingerprint(changed, bn_names) != original, f"changing {key} left the fingerprint as it was"


@pytest.mark.parametrize("kind", ["mlp_bn_after", "cnn"])
def test_bn_fingerprint_ignores_every_tensor_that_is_not_a_bn_buffer(
    kind: str, trained_nets: dict[str, Trained]
) -> None:
    net = copy.deepcopy(trained_nets[kind].net)
    before = model_bn_fingerprint(net)
    with torch.no_grad():
        for key, tensor in net.state_dict().items():
            if not key.endswith(BN_BUFFERS):  # weights, biases, BN affine parameters, standardization
                tensor.add_(1)
    assert model_bn_fingerprint(net) == before
    assert model_bn_fingerprint(copy.deepcopy(net)) == before


def test_running_statistics_follow_the_documented_momentum_rule() -> None:
    """docs/ARTIFACT.md: running = (1 - m) * running + m * batch, with the unbiased variance for running_var
    and the biased variance for the training-mode normalization."""
    m = 0.01  # Keras momentum 0.99
    bn = nn.BatchNorm2d(3, momentum=m, eps=1e-3)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    y = bn(x)
    batch_mean = x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, (1 - m) * 0 + m * batch_mean)
    torch.testing.assert_close(bn.running_var, (1 - m) * 1 + m * x.var(dim=(0, 2, 3), unbiased=True))
    biased = x.var(dim=(0, 2, 3), unbiased=False)
    expected = (x - batch_mean.view(1, 3, 1, 1)) / (biased.view(1, 3, 1, 1) + 1e-3).sqrt()
    torch.testing.assert_close(y, expected)
    assert int(bn.num_batches_tracked) == 1
