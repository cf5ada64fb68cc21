"""Parameter-group policies (model.optim): which parameters each policy decays and multiplies, for every family's
tiny FFN, and the optimizer options (Nesterov, AdamW betas and eps)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model import (
    PARAM_GROUP_POLICIES,
    WeightAlteration,
    build_model,
    build_optimizer,
    build_param_groups,
    model_family,
    model_names,
)
from model.optim import NORM_LAYERS, resolve_policy

WEIGHT_DECAY = 1e-3
TINY_ARCHS = [arch for arch in ("tiny", "tea_tiny", "slowfast_tiny", "uniformer_tiny") if arch in model_names()]
FFN_FRAMES = {"slowfast_tiny": (8, 16)}


def tiny_ffn(arch: str) -> nn.Module:
    """The family's tiny network as an FFN (two branches)."""
    return build_model(arch, num_classes=5, trained_frames=FFN_FRAMES.get(arch, (4, 8)))


def settings_by_parameter(groups: list[dict]) -> dict[int, tuple[float, float, str]]:
    """{id(parameter): (weight decay, lr multiplier, group name)}; each parameter must be in one group only."""
    found: dict[int, tuple[float, float, str]] = {}
    for group in groups:
        for parameter in group["params"]:
            assert id(parameter) not in found, f"a parameter is in groups {found[id(parameter)][2]} and {group['name']}"
            found[id(parameter)] = (group["weight_decay"], group["lr_mult"], group["name"])
    return found


def kinds(model: nn.Module) -> dict[int, str]:
    """{id(parameter): "norm" | "head_weight" | "head_bias" | "bias" | "weight"}, and the WA weights as "wa"."""
    head = model.classifier
    alteration = {id(parameter) for module in model.modules() if isinstance(module, WeightAlteration)
                  for parameter in module.parameters()}
    found = {}
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if module is head:
                kind = "head_" + name
            elif isinstance(module, NORM_LAYERS):
                kind = "norm"
            elif id(parameter) in alteration:
                kind = "wa"
            else:
                kind = "bias" if name == "bias" else "weight"
            found.setdefault(id(parameter), kind)
    return found


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("policy", sorted(PARAM_GROUP_POLICIES))
def test_every_policy_covers_every_trainable_parameter_once(arch: str, policy: str) -> None:
    model = tiny_ffn(arch)
    found = settings_by_parameter(build_param_groups(model, WEIGHT_DECAY, param_groups=policy))
    assert set(found) == {id(parameter) for parameter in model.parameters()}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_official_tsm_policy_decays_weights_only_and_multiplies_the_classifier(arch: str) -> None:
    model = tiny_ffn(arch)
    found = settings_by_parameter(build_param_groups(model, WEIGHT_DECAY, param_groups="official-tsm"))
    expected = {"norm": (0.0, 1.0), "bias": (0.0, 1.0), "weight": (WEIGHT_DECAY, 1.0), "wa": (WEIGHT_DECAY, 1.0),
                "head_weight": (WEIGHT_DECAY, 5.0), "head_bias": (0.0, 10.0)}
    for key, kind in kinds(model).items():
        assert found[key][:2] == expected[kind], (arch, kind, found[key])
    assert {kind for kind in kinds(model).values()} >= {"norm", "weight", "head_weight", "head_bias"}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_no_decay_norms_policy_decays_biases_but_no_norm_and_multiplies_nothing(arch: str) -> None:
    model = tiny_ffn(arch)
    found = settings_by_parameter(build_param_groups(model, WEIGHT_DECAY, param_groups="no-decay-norms"))
    for key, kind in kinds(model).items():
        assert found[key][:2] == ((0.0, 1.0) if kind == "norm" else (WEIGHT_DECAY, 1.0)), (arch, kind)
    head_bias = model.classifier.bias
    assert found[id(head_bias)][0] == WEIGHT_DECAY  # the official SlowFast run decays the classifier bias


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_no_decay_1d_policy_decays_exactly_the_multi_dimensional_parameters(arch: str) -> None:
    model = tiny_ffn(arch)
    found = settings_by_parameter(build_param_groups(model, WEIGHT_DECAY, param_groups="no-decay-1d"))
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            decayed = parameter.ndim > 1 and not isinstance(module, NORM_LAYERS)
            assert found[id(parameter)][:2] == ((WEIGHT_DECAY, 1.0) if decayed else (0.0, 1.0))
    wa = [kind for kind in kinds(model).values() if kind == "wa"]
    if model_family(arch) != "tea":  # TEA-FFN has no Weight Alteration
        assert wa and all(found[key][0] == WEIGHT_DECAY for key, kind in kinds(model).items() if kind == "wa")


def test_uniformer_recipe_policy_decays_position_embedding_convs_and_weight_alteration() -> None:
    if "uniformer_tiny" not in model_names():
        pytest.skip("no UniFormer family")
    model = tiny_ffn("uniformer_tiny")
    found = settings_by_parameter(build_param_groups(model, WEIGHT_DECAY, param_groups="no-decay-1d"))
    named = dict(model.named_parameters())
    positional = [name for name in named if "pos_embed" in name and name.endswith("weight")]
    assert positional and all(found[id(named[name])][0] == WEIGHT_DECAY for name in positional)
    assert all(found[id(named[name])][0] == 0.0 for name in named if "pos_embed" in name and name.endswith("bias"))


def test_all_policy_is_one_decayed_group_in_parameter_order() -> None:
    model = tiny_ffn("tiny")
    (group,) = build_param_groups(model, WEIGHT_DECAY)
    assert group["name"] == "all" and group["weight_decay"] == WEIGHT_DECAY and group["lr_mult"] == 1.0
    assert [id(parameter) for parameter in group["params"]] == [id(parameter) for parameter in model.parameters()]


def test_frozen_parameters_are_left_out_and_empty_groups_dropped() -> None:
    model = tiny_ffn("tiny")
    model.classifier.bias.requires_grad_(False)
    names = [group["name"] for group in build_param_groups(model, WEIGHT_DECAY, param_groups="official-tsm")]
    assert "head_bias" not in names and "head_weight" in names
    all_ids = {id(p) for group in build_param_groups(model, WEIGHT_DECAY) for p in group["params"]}
    assert id(model.classifier.bias) not in all_ids


def test_official_groups_is_the_compatibility_name_of_official_tsm() -> None:
    model = tiny_ffn("tiny")
    compatible = build_param_groups(model, WEIGHT_DECAY, official_groups=True)
    named = build_param_groups(model, WEIGHT_DECAY, param_groups="official-tsm")
    assert [(g["name"], g["weight_decay"], g["lr_mult"], len(g["params"])) for g in compatible] == [
        (g["name"], g["weight_decay"], g["lr_mult"], len(g["params"])) for g in named]
    assert resolve_policy(None) == "all" and resolve_policy(None, official_groups=True) == "official-tsm"
    with pytest.raises(ValueError, match="official-tsm"):
        resolve_policy("no-decay-1d", official_groups=True)
    with pytest.raises(ValueError, match="choose one of"):
        resolve_policy("no-such-policy")


def test_optimizer_options_reach_torch() -> None:
    model = tiny_ffn("tiny")
    sgd = build_optimizer(model, lr=0.03, momentum=0.9, weight_decay=1e-6, param_groups="no-decay-norms",
                          nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(group["nesterov"] and group["momentum"] == 0.9 and group["dampening"] == 0 for group in sgd.param_groups)
    assert {group["name"]: group["weight_decay"] for group in sgd.param_groups} == {"decayed": 1e-6, "norm": 0.0}
    adamw = build_optimizer(model, lr=2e-4, weight_decay=0.05, optimizer="adamw", param_groups="no-decay-1d",
                            betas=(0.8, 0.99), eps=1e-6)
    assert isinstance(adamw, torch.optim.AdamW)
    assert all(group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6 for group in adamw.param_groups)
    plain = build_optimizer(model, lr=2e-4, weight_decay=0.05, optimizer="adamw")
    assert plain.param_groups[0]["betas"] == (0.9, 0.999) and plain.param_groups[0]["eps"] == 1e-8
    with pytest.raises(ValueError, match="choose one of"):
        build_optimizer(model, lr=0.1, optimizer="adam")


class TiedHead(nn.Module):
    """A classifier whose weight is also an embedding's (weight tying): one parameter held by two modules."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(5, 4)
        self.norm = nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 5)
        self.classifier.weight = self.embedding.weight


@pytest.mark.parametrize("policy", sorted(PARAM_GROUP_POLICIES))
def test_a_parameter_shared_by_two_modules_is_in_one_group_once(policy: str) -> None:
    model = TiedHead()
    found = settings_by_parameter(build_param_groups(model, WEIGHT_DECAY, param_groups=policy))
    assert set(found) == {id(parameter) for parameter in model.parameters()} and len(found) == 4
    build_optimizer(model, lr=0.1, weight_decay=WEIGHT_DECAY, param_groups=policy)  # torch refuses duplicates


def test_a_registered_policy_is_listed_and_resolved() -> None:
    from model.optim import policy_names, register_policy

    @register_policy("test-one-group")
    def one_group(model: nn.Module, weight_decay: float) -> list[dict]:
        return [{"params": list(model.parameters()), "weight_decay": 0.0, "lr_mult": 2.0, "name": "one"}]

    try:
        assert "test-one-group" in policy_names() and set(policy_names()) == set(PARAM_GROUP_POLICIES)
        assert resolve_policy("test-one-group") == "test-one-group"
        (group,) = build_param_groups(TiedHead(), WEIGHT_DECAY, param_groups="test-one-group")
        assert group["name"] == "one" and group["lr_mult"] == 2.0
    finally:
        del PARAM_GROUP_POLICIES["test-one-group"]


def test_sgd_is_not_nesterov_unless_asked_and_the_conflict_message_names_the_fix() -> None:
    sgd = build_optimizer(TiedHead(), lr=0.1, momentum=0.9)
    assert sgd.defaults["nesterov"] is False and all(not group["nesterov"] for group in sgd.param_groups)
    with pytest.raises(ValueError, match="give one of the two$"):
        resolve_policy("all", official_groups=True)
