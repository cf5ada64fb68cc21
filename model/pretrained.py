"""Pretrained initialisation: what a load did (`BackboneLoad`, every family), and the TSM family's ImageNet weights
(torchvision ResNet V1, as the official code used), online or from a file."""

from __future__ import annotations

import dataclasses
import os

from torch import nn

from model.official_checkpoints import bare_official_key, load_checkpoint_file, map_state_dict

IMAGENET = "imagenet"
# torchvision weight enum names of the V1 ImageNet weights, per arch.
TORCHVISION_V1_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}
# Model keys an ImageNet ResNet cannot provide: the new head and FFN's Weight Alteration convs.
NOT_IN_IMAGENET = ("fc.", ".wa.convs.")
# Source keys of the pretraining classifier (torchvision's fc, the official new_fc), never loaded.
IMAGENET_HEAD_PREFIXES = ("fc.", "new_fc.")


def download_imagenet_state_dict(arch: str) -> dict:
    """torchvision's IMAGENET1K_V1 state dict for ``arch`` (from the torch hub cache, else downloaded).

    Raises
    ------
    RuntimeError
        One line naming the fix when the weights cannot be fetched (e.g. offline).
    """
    if arch not in TORCHVISION_V1_WEIGHTS:
        raise ValueError(f"pretrained='imagenet' is not available for arch={arch!r}; use one of "
                         f"{sorted(TORCHVISION_V1_WEIGHTS)} or pretrained=None")
    import torchvision.models

    weights = getattr(torchvision.models, TORCHVISION_V1_WEIGHTS[arch]).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as error:  # URLError, OSError, HTTPError, ... all mean "could not fetch"
        file_name = os.path.basename(weights.url)
        raise RuntimeError(
            f"could not download the ImageNet weights {weights.url} ({type(error).__name__}); when offline, copy "
            f"{file_name} to a local path and pass pretrained=<that path>, or use pretrained=None"
        ) from None


@dataclasses.dataclass(frozen=True)
class BackboneLoad:
    """What loading a pretrained backbone did.

    Attributes
    ----------
    source : str
        "imagenet" or the file's path.
    loaded : list of str
        Model keys that received a value (every stem and stage key).
    dropped : list of str
        Source keys not used: the pretraining classifier (``fc.*``).
    left_at_init : list of str
        Model keys the source cannot provide, left at their initial values (the new head, Weight Alteration).
    """

    source: str
    loaded: list[str]
    dropped: list[str]
    left_at_init: list[str]

    def summary(self) -> str:
        """One line for the training log."""
        return (f"pretrained backbone {self.source}: {len(self.loaded)} keys loaded; classifier dropped: "
                f"{', '.join(self.dropped) or 'none'}; left at init: {len(self.left_at_init)} keys "
                f"({', '.join(self.left_at_init[:4])}{', ...' if len(self.left_at_init) > 4 else ''})")


def load_imagenet_weights(model: nn.Module, arch: str, source: str) -> BackboneLoad:
    """Initialise the backbone of ``model`` from ImageNet weights; every private BN copy gets the same values.

    Parameters
    ----------
    model : nn.Module
        A TSM model (vanilla or FFN).
    arch : str
        Its arch name (to choose torchvision's weights when ``source`` is "imagenet").
    source : str
        "imagenet" or a path to a torchvision-style ResNet state dict (or a checkpoint dict with "state_dict").

    Returns
    -------
    BackboneLoad
        Loaded keys, dropped source keys (the classifier) and the model keys left at their initial values (the
        head, Weight Alteration convs).
    """
    if source == IMAGENET:
        state_dict = download_imagenet_state_dict(arch)
    else:
        state_dict = load_checkpoint_file(source)
        state_dict = state_dict.get("state_dict", state_dict)
    translated, missing, unexpected = map_state_dict(model, state_dict, expand_shared_norms=True,
                                                     skip_prefixes=IMAGENET_HEAD_PREFIXES)
    not_initialised = [key for key in missing if not any(part in key for part in NOT_IN_IMAGENET)]
    if not_initialised or unexpected:
        where = "torchvision's weights" if source == IMAGENET else source
        raise ValueError(
            f"ImageNet weights in {where} do not fit arch={arch!r}: {len(not_initialised)} model keys missing "
            f"(e.g. {not_initialised[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); pass the "
            f"torchvision {arch} state dict"
        )
    model.load_state_dict(translated, strict=False)
    dropped = [key for key in state_dict if bare_official_key(model, key).startswith(IMAGENET_HEAD_PREFIXES)]
    return BackboneLoad(source=str(source), loaded=sorted(translated), dropped=dropped, left_at_init=missing)
