"""Optimizer factory with the official TSM/FFN parameter groups as an option."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 5e-4
HEAD_WEIGHT_LR_MULT = 5.0
HEAD_BIAS_LR_MULT = 10.0


NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _classify_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split parameters into the official groups: weights, norm affine, head weight, head bias, other biases."""
    groups: dict[str, list[nn.Parameter]] = {
        "conv_weight": [], "norm": [], "head_weight": [], "head_bias": [], "other_bias": [],
    }
    head = getattr(model, "classifier", None)
    for module in model.modules():
        direct = list(module.named_parameters(recurse=False))
        if not direct:
            continue
        if module is head:
            groups["head_weight"].append(module.weight)
            groups["head_bias"].extend([module.bias] if module.bias is not None else [])
        elif isinstance(module, NORM_LAYERS):
            groups["norm"].extend(parameter for _, parameter in direct)
        else:
            for name, parameter in direct:
                groups["other_bias" if name == "bias" else "conv_weight"].append(parameter)
    return groups


def build_param_groups(
    model: nn.Module, weight_decay: float = DEFAULT_WEIGHT_DECAY, official_groups: bool = False
) -> list[dict]:
    """Parameter groups for ``torch.optim`` with an ``lr_mult`` entry each (multiply the base lr by it).

    Parameters
    ----------
    model : nn.Module
        The model (``model.classifier``, its final linear layer, gets the head multipliers).
    weight_decay : float
        Weight decay of the decayed groups.
    official_groups : bool
        False: one group, decay on everything. True: the official recipe: no decay on norm layers and biases,
        classifier weight lr x5 and bias lr x10.

    Returns
    -------
    list of dict
        Groups with keys "params", "weight_decay", "lr_mult", "name" (empty groups left out).
    """
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not official_groups:
        return [{"params": trainable, "weight_decay": weight_decay, "lr_mult": 1.0, "name": "all"}]
    settings = {
        "conv_weight": (weight_decay, 1.0), "norm": (0.0, 1.0), "other_bias": (0.0, 1.0),
        "head_weight": (weight_decay, HEAD_WEIGHT_LR_MULT), "head_bias": (0.0, HEAD_BIAS_LR_MULT),
    }
    groups = []
    for name, parameters in _classify_parameters(model).items():
        parameters = [parameter for parameter in parameters if parameter.requires_grad]
        if parameters:
            decay, lr_mult = settings[name]
            groups.append({"params": parameters, "weight_decay": decay, "lr_mult": lr_mult, "name": name})
    return groups


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float = DEFAULT_MOMENTUM,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    official_groups: bool = False,
    optimizer: str = "sgd",
) -> torch.optim.Optimizer:
    """SGD (or AdamW) over ``build_param_groups``; each group's lr is ``lr * lr_mult`` (schedulers keep the ratios).

    Parameters
    ----------
    model : nn.Module
        The model.
    lr : float
        Base learning rate (0.01 at total batch 32 in the official SSv2 runs).
    momentum : float
        SGD momentum (0.9).
    weight_decay : float
        Weight decay (5e-4).
    official_groups : bool
        Use the official groups (see ``build_param_groups``).
    optimizer : str
        "sgd" (the official recipe) or "adamw" (momentum unused).
    """
    groups = build_param_groups(model, weight_decay=weight_decay, official_groups=official_groups)
    for group in groups:
        group["lr"] = lr * group["lr_mult"]
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer {optimizer!r}: choose sgd or adamw")
