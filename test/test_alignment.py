"""Mirror alignment: Eq. 2 against a loop-based reference, the MI bound, gradients, pairing and Recall@1."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mirror.alignment import (
    AlignmentConfig,
    MirrorAlignment,
    PairingError,
    alignment_recall_at_1,
    class_key,
    episode_key,
    index_by_key,
    info_nce_loss,
    info_nce_losses,
    instruction_key,
    key_function,
    mutual_information_lower_bound,
    pair_by_key,
    pair_samples,
    positive_mask,
)


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _eq2_reference(z_u: torch.Tensor, z_e: torch.Tensor, tau: float) -> float:
    """Eq. 2 written term by term with Python floats."""
    u, e = z_u.tolist(), z_e.tolist()
    b = len(u)
    total = 0.0
    for i in range(b):
        num_ue = math.exp(_cos(u[i], e[i]) / tau)
        den_ue = sum(math.exp(_cos(u[i], e[j]) / tau) for j in range(b))
        num_eu = math.exp(_cos(e[i], u[i]) / tau)
        den_eu = sum(math.exp(_cos(e[i], u[j]) / tau) for j in range(b))
        total += math.log(num_ue / den_ue) + math.log(num_eu / den_eu)
    return -total / (2 * b)


def _multi_positive_reference(z_u: torch.Tensor, z_e: torch.Tensor, tau: float, keys: list) -> float:
    """Both directions, each row averaging -log p over all same-key columns."""
    u, e = z_u.tolist(), z_e.tolist()
    b = len(u)

    def direction(a: list, c: list) -> float:
        out = 0.0
        for i in range(b):
            den = sum(math.exp(_cos(a[i], c[j]) / tau) for j in range(b))
            pos = [j for j in range(b) if keys[j] == keys[i]]
            out += -sum(math.log(math.exp(_cos(a[i], c[j]) / tau) / den) for j in pos) / len(pos)
        return out / b

    return 0.5 * (direction(u, e) + direction(e, u))


@pytest.mark.parametrize("tau", [0.02, 0.1, 0.2])
def test_info_nce_matches_loop_reference_of_eq2(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    z_u = torch.randn(7, 5, generator=g, dtype=torch.float64)
    z_e = torch.randn(7, 5, generator=g, dtype=torch.float64)
    expected = _eq2_reference(z_u, z_e, tau)
    assert float(info_nce_loss(z_u, z_e, tau)) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # Distinct keys are exactly Eq. 2 as well.
    distinct = positive_mask(list("abcdefg"))
    assert float(info_nce_loss(z_u, z_e, tau, distinct)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_directions_are_averaged_not_summed() -> None:
    g = torch.Generator().manual_seed(1)
    z_u = torch.randn(6, 4, generator=g, dtype=torch.float64)
    z_e = torch.randn(6, 4, generator=g, dtype=torch.float64)
    l_ue, l_eu = info_nce_losses(z_u, z_e, 0.1)
    assert float(l_ue) != pytest.approx(float(l_eu))  # the two directions really differ
    assert float(info_nce_loss(z_u, z_e, 0.1)) == pytest.approx(0.5 * float(l_ue + l_eu), rel=1e-14)


def test_module_forward_matches_reference_and_key_handling() -> None:
    torch.manual_seed(2)
    module = MirrorAlignment(6, 9, AlignmentConfig(shared_dim=4, tau=0.1)).double()
    u = torch.randn(8, 6, dtype=torch.float64)
    e = torch.randn(8, 9, dtype=torch.float64)
    keys = ["a", "b", "a", "c", "b", "a", "d", "e"]
    out = module(u, e, keys)
    z_u, z_e = module.t_u(u), module.t_e(e)
    expected = _multi_positive_reference(z_u, z_e, 0.1, keys)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-12)
    # Without keys, or with same-key positives switched off, the literal Eq. 2.
    literal = _eq2_reference(z_u, z_e, 0.1)
    assert float(module(u, e).loss.detach()) == pytest.approx(literal, rel=1e-12)
    module_literal = MirrorAlignment(6, 9, AlignmentConfig(shared_dim=4, same_key_positives=False)).double()
    module_literal.load_state_dict(module.state_dict())
    assert float(module_literal(u, e, keys).loss.detach()) == pytest.approx(literal, rel=1e-12)
    # Duplicated keys change the loss: same-key rows are no longer negatives.
    assert float(out.loss.detach()) != pytest.approx(literal, rel=1e-6)


def test_mutual_information_bound() -> None:
    assert mutual_information_lower_bound(0.5, 8) == pytest.approx(math.log(8) - 0.5)
    g = torch.Generator().manual_seed(3)
    for b in (2, 16, 64):
        z_u = torch.randn(b, 32, generator=g, dtype=torch.float64)
        z_e = torch.randn(b, 32, generator=g, dtype=torch.float64)
        mi = mutual_information_lower_bound(info_nce_loss(z_u, z_e, 0.1), b)
        assert float(mi) <= math.log(b)
    # Perfectly aligned, orthogonal (well separated) pairs: the bound reaches log B up to (B-1) e^{-1/tau}.
    b = 16
    z = torch.eye(b, dtype=torch.float64)
    loss = info_nce_loss(z, z.clone(), 0.1)
    assert float(loss) == pytest.approx(math.log(1 + (b - 1) * math.exp(-10.0)), rel=1e-9)
    mi = float(mutual_information_lower_bound(loss, b))
    assert math.log(b) - 1e-3 < mi <= math.log(b)
    with pytest.raises(ValueError):
        mutual_information_lower_bound(0.1, 0)


def test_gradients_reach_both_heads_and_the_encoders() -> None:
    torch.manual_seed(4)
    module = MirrorAlignment(10, 12, AlignmentConfig(shared_dim=8))
    u = torch.randn(5, 10, requires_grad=True)
    e = torch.randn(5, 12, requires_grad=True)
    out = module(u, e, keys=[0, 1, 0, 2, 3])
    out.loss.backward()
    for tensor in (module.t_u.weight, module.t_e.weight, u, e):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0
    assert out.z_u.shape == out.z_e.shape == (5, 8)
    assert out.mutual_information_lower_bound() == pytest.approx(math.log(5) - float(out.loss.detach()))


def test_training_the_heads_aligns_correlated_features() -> None:
    """Probing setup in miniature: u and e are different noisy linear views of the same 6 latent actions."""
    torch.manual_seed(5)
    classes, per_class = 6, 8
    latent = torch.randn(classes, 4)
    labels = torch.arange(classes).repeat_interleave(per_class)
    u = latent[labels] @ torch.randn(4, 20) + 0.05 * torch.randn(len(labels), 20)
    e = latent[labels] @ torch.randn(4, 16) + 0.05 * torch.randn(len(labels), 16)
    module = MirrorAlignment(20, 16, AlignmentConfig(shared_dim=8, tau=0.1))
    keys = labels.tolist()
    before = alignment_recall_at_1(*module.project(u, e), keys).mean
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = float(module(u, e, keys).loss.detach())
    for _ in range(40):
        opt.zero_grad()
        loss = module(u, e, keys).loss
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = alignment_recall_at_1(*module.project(u, e), keys).mean
        last = float(module(u, e, keys).loss.detach())
    assert last < first - 0.5
    assert after == 1.0
    assert before < 1.0


def test_bad_inputs_raise_clear_errors() -> None:
    module = MirrorAlignment(4, 3, AlignmentConfig(shared_dim=2))
    with pytest.raises(ValueError, match="shape"):
        module(torch.randn(2, 5), torch.randn(2, 3))
    with pytest.raises(ValueError, match="same number"):
        module(torch.randn(2, 4), torch.randn(3, 3))
    with pytest.raises(ValueError, match="tau"):
        AlignmentConfig(tau=0.0)
    with pytest.raises(ValueError, match="pairing"):
        AlignmentConfig(pairing="by_task")
    with pytest.raises(ValueError, match="diagonal"):
        info_nce_loss(torch.randn(2, 3), torch.randn(2, 3), 0.1, torch.zeros(2, 2, dtype=torch.bool))


def _sample(task: str, episode: int, instruction: str) -> SimpleNamespace:
    return SimpleNamespace(task=task, episode=episode, instruction=instruction)


def test_key_functions() -> None:
    s = _sample("open_drawer", 3, "open the top drawer")
    assert episode_key(s) == ("open_drawer", 3)
    assert instruction_key(s) == "open the top drawer"
    assert class_key(s) == "open_drawer"
    assert key_function("class") is class_key
    with pytest.raises(ValueError):
        key_function("task")


def test_pairing_respects_keys_and_is_reproducible() -> None:
    ee_keys = ["a", "b", "a", "c", "a", "b"]
    index = index_by_key(ee_keys)
    assert index["a"].tolist() == [0, 2, 4]
    au_keys = ["a", "b", "c", "a", "a", "b", "a", "a", "a", "a"] * 10
    pairs = pair_by_key(au_keys, index, 123)
    assert all(ee_keys[j] == k for j, k in zip(pairs, au_keys))
    assert np.array_equal(pairs, pair_by_key(au_keys, index, 123))
    assert np.array_equal(pairs, pair_by_key(au_keys, index, np.random.default_rng(123)))
    assert not np.array_equal(pairs, pair_by_key(au_keys, index, 124))
    # Every EE sample of a key gets drawn (random, not always the first).
    assert set(pairs[[k == "a" for k in au_keys]].tolist()) == {0, 2, 4}
    with pytest.raises(PairingError, match="'z'"):
        pair_by_key(["a", "z"], index, 0)


@pytest.mark.parametrize(
    ("pairing", "attribute"), [("episode", None), ("instruction", "instruction"), ("class", "task")]
)
def test_pair_samples_per_strategy(pairing: str, attribute: str | None) -> None:
    ee = [
        _sample(task, ep, f"{task} v{ep % 2}") for task in ("open_drawer", "push_buttons") for ep in range(4)
    ]
    au = [_sample("push_buttons", 1, "push_buttons v1"), _sample("open_drawer", 2, "open_drawer v0")] * 5
    chosen, keys = pair_samples(au, ee, pairing, 7)
    for a, j, key in zip(au, chosen, keys):
        partner = ee[j]
        if attribute is None:
            assert (partner.task, partner.episode) == (a.task, a.episode) == key
        else:
            assert getattr(partner, attribute) == getattr(a, attribute) == key


def test_recall_at_1() -> None:
    g = torch.Generator().manual_seed(6)
    z = torch.randn(50, 16, generator=g)
    assert alignment_recall_at_1(z, z.clone()) == alignment_recall_at_1(z, z * 3.0)
    perfect = alignment_recall_at_1(z, z.clone())
    assert perfect.u_to_e == perfect.e_to_u == perfect.mean == 1.0
    # Random embeddings: chance is 1/N without keys, 1/classes with keys.
    n = 400
    z_u = torch.randn(n, 64, generator=g)
    z_e = torch.randn(n, 64, generator=g)
    chance = alignment_recall_at_1(z_u, z_e)
    assert chance.mean < 0.02
    keys = [i % 4 for i in range(n)]
    by_key = alignment_recall_at_1(z_u, z_e, keys)
    assert 0.15 < by_key.mean < 0.35
    with pytest.raises(ValueError):
        alignment_recall_at_1(z_u, z_e, keys[:-1])
