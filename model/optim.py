"""The optimizer and its parameter groups, chosen by a named policy (`PARAM_GROUP_POLICIES`).

A policy decides, for every trainable parameter, its weight decay and its learning-rate multiplier:

| policy | weight decay | learning-rate multipliers | used by |
|---|---|---|---|
| "all" | every parameter | none | the default |
| "official-tsm" | convolution / linear weights only (none on norm layers and biases) | classifier weight x5, bias x10 | TSM and TEA (TSN's optimizer policies) |
| "no-decay-norms" | every parameter except norm layers' (biases are decayed) | none | SlowFast (PySlowFast, BN.WEIGHT_DECAY 0) |
| "no-decay-1d" | parameters with more than one dimension (none on norms and biases) | none | UniFormer (PySlowFast, ZERO_WD_1D_PARAM) |

Norm layers are BatchNorm, LayerNorm and GroupNorm, including every private copy an FFN holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 5e-4
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8
HEAD_WEIGHT_LR_MULT = 5.0
HEAD_BIAS_LR_MULT = 10.0
DEFAULT_POLICY = "all"
OFFICIAL_TSM_POLICY = "official-tsm"
OPTIMIZERS = ("sgd", "adamw")

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

ParamGroupPolicy = Callable[[nn.Module, float], list[dict]]
PARAM_GROUP_POLICIES: dict[str, ParamGroupPolicy] = {}
"""The parameter-group policies by name: ``policy(model, weight_decay) -> groups``."""


def register_policy(name: str) -> Callable[[ParamGroupPolicy], ParamGroupPolicy]:
    """Decorator registering a parameter-group policy under `name`."""

    def decorate(policy: ParamGroupPolicy) -> ParamGroupPolicy:
        PARAM_GROUP_POLICIES[name] = policy
        return policy

    return decorate


def _group(name: str, parameters: Sequence[nn.Parameter], weight_decay: float, lr_mult: float) -> dict:
    """One parameter group in the layout every policy returns."""
    return {"params": list(parameters), "weight_decay": weight_decay, "lr_mult": lr_mult, "name": name}


def _named_groups(named: dict[str, list[nn.Parameter]], settings: dict[str, tuple[float, float]]) -> list[dict]:
    """Groups in the order of `named`, trainable parameters only, empty groups left out."""
    groups = []
    for name, parameters in named.items():
        parameters = [parameter for parameter in parameters if parameter.requires_grad]
        if parameters:
            decay, lr_mult = settings[name]
            groups.append(_group(name, parameters, decay, lr_mult))
    return groups


def _direct_parameters(model: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """(module, name, parameter) for every parameter, in module order, each parameter once."""
    seen: set[int] = set()
    found = []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                found.append((module, name, parameter))
    return found


@register_policy("all")
def all_parameters(model: nn.Module, weight_decay: float) -> list[dict]:
    """One group: every trainable parameter decayed, no multiplier."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return [_group("all", trainable, weight_decay, 1.0)]


def _classify_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split parameters into the official groups: weights, norm affine, head weight, head bias, other biases (a
    parameter shared by several modules goes by its first owner)."""
    groups: dict[str, list[nn.Parameter]] = {
        "conv_weight": [], "norm": [], "head_weight": [], "head_bias": [], "other_bias": [],
    }
    head = getattr(model, "classifier", None)
    for module, name, parameter in _direct_parameters(model):
        if module is head:
            groups["head_bias" if name == "bias" else "head_weight"].append(parameter)
        elif isinstance(module, NORM_LAYERS):
            groups["norm"].append(parameter)
        else:
            groups["other_bias" if name == "bias" else "conv_weight"].append(parameter)
    return groups


@register_policy(OFFICIAL_TSM_POLICY)
def official_tsm(model: nn.Module, weight_decay: float) -> list[dict]:
    """TSN's policies as the official TSM / TEA runs use them: no decay on norm layers and biases, classifier
    weight lr x5 (decayed) and bias lr x10 (not decayed)."""
    settings = {
        "conv_weight": (weight_decay, 1.0), "norm": (0.0, 1.0), "other_bias": (0.0, 1.0),
        "head_weight": (weight_decay, HEAD_WEIGHT_LR_MULT), "head_bias": (0.0, HEAD_BIAS_LR_MULT),
    }
    return _named_groups(_classify_parameters(model), settings)


@register_policy("no-decay-norms")
def no_decay_norms(model: nn.Module, weight_decay: float) -> list[dict]:
    """No decay on norm layers' parameters; every other parameter, biases included, decayed; no multiplier."""
    named: dict[str, list[nn.Parameter]] = {"decayed": [], "norm": []}
    for module, _, parameter in _direct_parameters(model):
        named["norm" if isinstance(module, NORM_LAYERS) else "decayed"].append(parameter)
    return _named_groups(named, {"decayed": (weight_decay, 1.0), "norm": (0.0, 1.0)})


@register_policy("no-decay-1d")
def no_decay_1d(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay exactly the parameters with more than one dimension (convolution and linear weights, Weight
    Alteration); none on norm layers' parameters and biases; no multiplier."""
    named: dict[str, list[nn.Parameter]] = {"decayed": [], "no_decay": []}
    for module, _, parameter in _direct_parameters(model):
        decayed = parameter.ndim > 1 and not isinstance(module, NORM_LAYERS)
        named["decayed" if decayed else "no_decay"].append(parameter)
    return _named_groups(named, {"decayed": (weight_decay, 1.0), "no_decay": (0.0, 1.0)})


def policy_names() -> tuple[str, ...]:
    """The registered parameter-group policies."""
    return tuple(PARAM_GROUP_POLICIES)


def resolve_policy(param_groups: str | None, official_groups: bool = False) -> str:
    """The policy name: `param_groups`, else "official-tsm" for the compatibility flag `official_groups`, else "all".

    Raises
    ------
    ValueError
        For an unknown policy, or a policy other than "official-tsm" together with ``official_groups=True``.
    """
    if param_groups is None:
        return OFFICIAL_TSM_POLICY if official_groups else DEFAULT_POLICY
    if param_groups not in PARAM_GROUP_POLICIES:
        raise ValueError(f"param_groups={param_groups!r}; choose one of {list(PARAM_GROUP_POLICIES)}")
    if official_groups and param_groups != OFFICIAL_TSM_POLICY:
        raise ValueError(f"official_groups=True is the policy {OFFICIAL_TSM_POLICY!r}, not {param_groups!r}; "
                         "give one of the two")
    return param_groups


def build_param_groups(
    model: nn.Module, weight_decay: float = DEFAULT_WEIGHT_DECAY, official_groups: bool = False,
    param_groups: str | None = None,
) -> list[dict]:
    """Parameter groups for ``torch.optim`` with an ``lr_mult`` entry each (multiply the base lr by it).

    Parameters
    ----------
    model : nn.Module
        The model (``model.classifier``, its final linear layer, gets the head multipliers of "official-tsm").
    weight_decay : float
        Weight decay of the decayed groups.
    official_groups : bool
        Compatibility: True is ``param_groups="official-tsm"``.
    param_groups : str, optional
        A policy of `PARAM_GROUP_POLICIES` (default "all": one group, decay on everything).

    Returns
    -------
    list of dict
        Groups with keys "params", "weight_decay", "lr_mult", "name" (empty groups left out).
    """
    policy = resolve_policy(param_groups, official_groups)
    return PARAM_GROUP_POLICIES[policy](model, weight_decay)


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float = DEFAULT_MOMENTUM,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    official_groups: bool = False,
    optimizer: str = "sgd",
    *,
    param_groups: str | None = None,
    nesterov: bool = False,
    betas: Sequence[float] = DEFAULT_BETAS,
    eps: float = DEFAULT_EPS,
) -> torch.optim.Optimizer:
    """SGD (or AdamW) over ``build_param_groups``; each group's lr is ``lr * lr_mult`` (schedulers keep the ratios).

    Parameters
    ----------
    model : nn.Module
        The model.
    lr : float
        Base learning rate (0.01 at total batch 32 in the official TSM SSv2 runs).
    momentum : float
        SGD momentum (0.9).
    weight_decay : float
        Weight decay of the decayed groups (5e-4).
    official_groups : bool
        Compatibility: True is ``param_groups="official-tsm"``.
    optimizer : str
        "sgd" or "adamw" (momentum and nesterov unused).
    param_groups : str, optional
        The parameter-group policy (see the module docstring; default "all").
    nesterov : bool
        SGD: Nesterov momentum (dampening 0).
    betas, eps : sequence of float, float
        AdamW's coefficients of the running averages and its denominator term ((0.9, 0.999), 1e-8).
    """
    groups = build_param_groups(model, weight_decay=weight_decay, official_groups=official_groups,
                                param_groups=param_groups)
    for group in groups:
        group["lr"] = lr * group["lr_mult"]
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    raise ValueError(f"optimizer {optimizer!r}: choose one of {OPTIMIZERS}")
