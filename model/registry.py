"""The model registry: `build_model(arch, ...)` looks the name up among the entry points of every family.

A family is one module under model/ whose entry functions are decorated with `register_model`; the module is
listed once in `FAMILY_MODULES` (imported on the first lookup). An entry function takes ``num_classes`` and
``trained_frames`` plus its own keyword options (with defaults) and returns a `model.interface.VideoModel`.
`build_model` records the name, the class count, the trained frame counts and every option (defaults included)
in ``model.config``, so ``build_model(**model.config)`` rebuilds the same network.

A family also registers its training recipes by name (`register_recipe`, e.g. "official": the run of the family's
official code): the settings a training run takes, keyed by train.py's option names (``lr``, ``schedule``,
``param_groups``, ``shift_mode``, ...). `model_recipe(arch, name)` finds the recipe of an arch's family, so a
training script asks for "the official recipe of this arch" without naming a family.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from model.interface import InputSpec, VideoModel

# One entry per family: the module that registers its names.
FAMILY_MODULES: tuple[str, ...] = ("model.tsm_resnet", "model.tea", "model.slowfast", "model.uniformer")

_REGISTRY: dict[str, "ModelEntry"] = {}
_REFERENCE_RUNS: dict[str, "ReferenceRun"] = {}
_RECIPES: dict[tuple[str, str], "Recipe"] = {}
_OFFICIAL_READERS: dict[str, "OfficialReader"] = {}
_IMAGE_PRETRAINING: dict[str, "ImagePretraining"] = {}
_FAMILIES_LOADED = False
BUILD_KEYS = ("arch", "num_classes", "trained_frames", "pretrained")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model name: its family and its entry function."""

    name: str
    family: str
    builder: Callable[..., VideoModel]
    default_pretrained: str | None = None


def register_model(name: str, family: str, default_pretrained: str | None = None
                   ) -> Callable[[Callable[..., VideoModel]], Callable[..., VideoModel]]:
    """Decorator registering an entry function under `name` (unique across families).

    `default_pretrained` is the named source ``--pretrained auto`` means for this model (e.g. "imagenet" for the
    ImageNet ResNets; None: no pretrained weights unless a file is given).
    """

    def decorate(builder: Callable[..., VideoModel]) -> Callable[..., VideoModel]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model name {name!r} is registered twice ({_REGISTRY[name].family} and {family})")
        _REGISTRY[name] = ModelEntry(name, family, builder, default_pretrained)
        return builder

    return decorate


@dataclasses.dataclass(frozen=True)
class OfficialFile:
    """What a family reads off an official checkpoint's state dict: enough to build the model it fits.

    Attributes
    ----------
    arch : str
        The registered name with the file's layout.
    trained_frames : tuple of int or None
        An FFN file's branches; None for a vanilla file.
    num_classes : int
        The classifier's outputs.
    """

    arch: str
    trained_frames: tuple[int, ...] | None
    num_classes: int


OfficialReader = Callable[[Mapping[str, Any]], OfficialFile | None]


def register_official_reader(family: str) -> Callable[[OfficialReader], OfficialReader]:
    """Decorator registering a family's reader of official state dicts (None: not this family's file)."""

    def decorate(reader: OfficialReader) -> OfficialReader:
        _OFFICIAL_READERS[family] = reader
        return reader

    return decorate


def read_official_state_dict(state_dict: Mapping[str, Any]) -> tuple[str, OfficialFile] | None:
    """(family, what its reader found) for an official state dict of a registered family, or None.

    The state dict's keys may carry the "module." prefix; every family's reader recognises its own layout only.
    """
    _load_families()
    for family, reader in _OFFICIAL_READERS.items():
        found = reader(state_dict)
        if found is not None:
            return family, found
    return None


def official_families() -> list[str]:
    """The families whose official checkpoints can be read."""
    _load_families()
    return sorted(_OFFICIAL_READERS)


@dataclasses.dataclass(frozen=True)
class ImagePretraining:
    """How a registered model's backbone is pretrained on single images (pretrain.py, the stand-in for ImageNet).

    The family says which network learns from the images (its 2D counterpart, or its own network on one-frame
    clips) and how the trained network becomes a file its ``load_pretrained`` reads: the names of the weights its
    authors initialise from, every temporal kernel inflated by the family's rule. pretrain.py names no family.

    Attributes
    ----------
    build : callable
        ``build(num_classes)`` -> the image network: takes one-frame videos (N, 1, 3, H, W) and returns logits.
    export : callable
        ``export(network)`` -> the trained network's state dict in the names the model's ``load_pretrained`` reads
        (its classifier included; the loader drops it).
    input_spec : InputSpec
        The normalisation and channel order of the images (the model's own).
    recipe : dict
        What the export does beyond pretrain.py's settings (e.g. ``{"inflation": "mean"}``); it is part of the
        cache key, so a changed rule never reuses an old file. Empty when the weights are copied as they are.
    """

    build: Callable[[int], nn.Module]
    export: Callable[[nn.Module], dict[str, Any]]
    input_spec: InputSpec
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def register_image_pretraining(arch: str, pretraining: ImagePretraining) -> None:
    """Register how the model `arch` (registered by the same family) is pretrained on single images."""
    _IMAGE_PRETRAINING[arch] = pretraining


def image_pretraining(arch: str) -> ImagePretraining:
    """The single-image pretraining of a registered model (ValueError naming the models that have one)."""
    model_entry(arch)
    if arch not in _IMAGE_PRETRAINING:
        raise ValueError(f"arch={arch!r} has no single-image pretraining; choose one of "
                         f"{sorted(_IMAGE_PRETRAINING)}")
    return _IMAGE_PRETRAINING[arch]


def image_pretraining_models() -> list[str]:
    """The registered models that pretrain.py can pretrain, sorted."""
    _load_families()
    return sorted(_IMAGE_PRETRAINING)


def _load_families() -> None:
    """Import every family module once (their decorators fill the registry)."""
    global _FAMILIES_LOADED
    if not _FAMILIES_LOADED:
        for module in FAMILY_MODULES:
            importlib.import_module(module)
        _FAMILIES_LOADED = True


def model_names() -> list[str]:
    """Every registered model name, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def model_entry(arch: str) -> ModelEntry:
    """The registry entry of `arch` (ValueError naming the choices when unknown)."""
    _load_families()
    if arch not in _REGISTRY:
        raise ValueError(f"arch={arch!r} is not a registered model; choose one of {model_names()}")
    return _REGISTRY[arch]


def model_family(arch: str) -> str:
    """The family of a registered model name ("tsm", "tea", ...)."""
    return model_entry(arch).family


def default_pretrained(arch: str) -> str | None:
    """What ``--pretrained auto`` means for a registered model (None: start from its own initialisation)."""
    return model_entry(arch).default_pretrained


def model_options(arch: str) -> dict[str, Any]:
    """The keyword options a registered model takes, with their defaults (None where it has none)."""
    signature = inspect.signature(model_entry(arch).builder)
    return {name: (None if parameter.default is inspect.Parameter.empty else parameter.default)
            for name, parameter in signature.parameters.items() if name not in BUILD_KEYS}


def _frozen(value: Any) -> Any:
    """A read-only copy of a recipe value: lists and tuples become tuples (recursively), dicts read-only views."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, Mapping):
        return types.MappingProxyType({key: _frozen(item) for key, item in value.items()})
    return value


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A registered training recipe: its settings and, per dataset, the settings that differ there."""

    settings: Mapping[str, Any]
    dataset_overrides: Mapping[str, Mapping[str, Any]]


def register_recipe(family: str, name: str, settings: Mapping[str, Any],
                    dataset_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Register a family's named training recipe (frozen: the registry keeps a read-only copy).

    Parameters
    ----------
    family : str
        The family, as its models are registered (`register_model`'s ``family``).
    name : str
        The recipe's name, e.g. "official" (``train.py --preset official``).
    settings : mapping
        Training settings keyed by train.py's option names; lists are stored as tuples.
    dataset_overrides : mapping, optional
        {dataset: settings} where the recipe differs for a dataset (a manifest's "dataset", e.g. "k400").

    Raises
    ------
    ValueError
        When the family already registered another recipe under that name.
    """
    recipe = Recipe(_frozen(settings), _frozen(dataset_overrides or {}))
    key = (family, name)
    if key in _RECIPES and _RECIPES[key] != recipe:
        raise ValueError(f"recipe {name!r} of family {family!r} is registered twice with different settings")
    _RECIPES[key] = recipe


@dataclasses.dataclass(frozen=True)
class ReferenceRun:
    """The model of a family's official FFN run: its arch and trained frame counts (what ``make gpu-check`` times
    and measures for the family, at the per-process batch of the family's "official" recipe)."""

    arch: str
    trained_frames: tuple[int, ...]


def register_reference_run(family: str, arch: str, trained_frames: Sequence[int]) -> None:
    """Register the model of a family's official FFN run."""
    _REFERENCE_RUNS[family] = ReferenceRun(arch, tuple(sorted(int(frames) for frames in trained_frames)))


def reference_runs() -> dict[str, ReferenceRun]:
    """{family: the model of its official FFN run}, for every family that registered one."""
    _load_families()
    return dict(sorted(_REFERENCE_RUNS.items()))


def recipe_names() -> list[str]:
    """The names of every family's registered recipes, sorted (each once)."""
    _load_families()
    return sorted({name for _, name in _RECIPES})


def model_recipe(arch: str, name: str, dataset: str | None = None) -> Mapping[str, Any] | None:
    """The recipe `name` of the family of `arch`, with the overrides of `dataset` applied (a read-only mapping), or
    None when that family has none."""
    recipe = _RECIPES.get((model_family(arch), name))
    if recipe is None:
        return None
    return types.MappingProxyType({**recipe.settings, **recipe.dataset_overrides.get(dataset or "", {})})


def families_with_recipe(name: str) -> list[str]:
    """The families that registered a recipe called `name`, sorted."""
    _load_families()
    return sorted(family for family, recipe in _RECIPES if recipe == name)


def normalise_trained_frames(trained_frames: Any) -> tuple[int, ...] | None:
    """Sorted distinct positive frame counts (an int is one count), or None for a vanilla model."""
    if trained_frames is None:
        return None
    if isinstance(trained_frames, int):
        trained_frames = (trained_frames,)
    frames = tuple(sorted({int(count) for count in trained_frames}))
    if not frames or frames[0] < 1:
        raise ValueError(f"trained_frames must be positive frame counts such as (4, 8, 16), got {trained_frames!r}")
    return frames


def resolved_options(builder: Callable[..., VideoModel], options: dict[str, Any]) -> dict[str, Any]:
    """The entry function's keyword options with the given values and every default filled in.

    Raises
    ------
    ValueError
        For an option the entry function does not take (naming the options it takes).
    """
    signature = inspect.signature(builder)
    accepted = [name for name in signature.parameters if name not in BUILD_KEYS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; this model takes {accepted}")
    resolved = {}
    for name in accepted:
        parameter = signature.parameters[name]
        if name in options:
            resolved[name] = options[name]
        elif parameter.default is not inspect.Parameter.empty:
            resolved[name] = parameter.default
    return resolved


def build_model(
    arch: str,
    num_classes: int,
    trained_frames: Sequence[int] | int | None = None,
    pretrained: str | None = None,
    **options: Any,
) -> VideoModel:
    """Build a registered model.

    Parameters
    ----------
    arch : str
        A registered name (`model_names()`), e.g. "resnet50" (TSM), "tiny" (the CPU demo TSM).
    num_classes : int
        Classifier outputs.
    trained_frames : sequence of int, optional
        The frame counts of an FFN's branches, e.g. (4, 8, 16); None builds the vanilla model.
    pretrained : str, optional
        Initialise the backbone from pretrained weights (a path, or a family's named source such as "imagenet");
        what was loaded is in ``model.backbone_load``.
    **options
        The family's own options (its entry function's keywords).

    Returns
    -------
    VideoModel
        The model, with ``config`` set (``pretrained`` recorded as None: the weights are in the checkpoint).
    """
    entry = model_entry(arch)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    frames = normalise_trained_frames(trained_frames)
    settings = resolved_options(entry.builder, options)
    model = entry.builder(num_classes=int(num_classes), trained_frames=frames, **settings)
    if pretrained is not None:
        model.backbone_load = model.load_pretrained(pretrained)
    model.config = {"arch": arch, "num_classes": int(num_classes),
                    "trained_frames": list(frames) if frames else None, "pretrained": None, **settings}
    return model
