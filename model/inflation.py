"""Inflating temporal kernels from their centre taps: how a 3D network starts from weights learnt on single images.

A network whose 3D convolutions have only ever seen one-frame clips has learnt with the centre tap of every
temporal kernel alone (with "same" temporal padding the other taps multiply zero padding). After such single-image
pretraining each temporal kernel of size k > 1 is rebuilt from its centre tap W:

- ``"mean"``: every tap is W / k (I3D's inflation, Carreira and Zisserman, "Quo Vadis, Action Recognition?",
  CVPR 2017; PySlowFast's ``inflate_weight`` and the UniFormer video code's ``inflate_weight`` with its default
  ``center=False`` start their 3D networks from ImageNet this way). A static clip then gives the 2D network's
  activations, except near the clip's ends where the zero padding enters.
- ``"centre"``: the centre tap keeps W and the other taps are zero, so the 3D network starts as the 2D network
  applied frame by frame (the UniFormer code's ``center=True``).
"""

from __future__ import annotations

import torch
from torch import nn

INFLATION_RULES = ("mean", "centre")


def inflate_temporal_kernels(network: nn.Module, rule: str) -> list[str]:
    """Rebuild every Conv3d weight of temporal kernel k > 1 from its centre tap, in place.

    Parameters
    ----------
    network : nn.Module
        A network whose 3D convolutions were trained on one-frame clips.
    rule : str
        "mean" (every tap W / k) or "centre" (W at the centre, zero elsewhere).

    Returns
    -------
    list of str
        The names of the inflated weights, in module order.

    Raises
    ------
    ValueError
        For an unknown rule, or a temporal kernel whose padding is not k // 2 (its centre tap would not be the one
        a one-frame clip trains).
    """
    if rule not in INFLATION_RULES:
        raise ValueError(f"inflation rule {rule!r} is not one of {list(INFLATION_RULES)}")
    inflated = []
    for name, module in network.named_modules():
        if not isinstance(module, nn.Conv3d) or module.kernel_size[0] == 1:
            continue
        taps = module.kernel_size[0]
        if module.padding[0] != taps // 2:
            raise ValueError(f"{name}: temporal kernel {taps} with padding {module.padding[0]}; only 'same' "
                             f"temporal padding ({taps // 2}) trains the centre tap on one-frame clips")
        with torch.no_grad():
            centre = module.weight[:, :, taps // 2].clone()
            if rule == "mean":
                module.weight.copy_((centre / taps).unsqueeze(2).expand_as(module.weight))
            else:
                module.weight.zero_()
                module.weight[:, :, taps // 2] = centre
        inflated.append(f"{name}.weight" if name else "weight")
    return inflated
