"""Video models of every family behind one registry, FFN's parts, official checkpoint loading, loss and optimizer.

``build_model(arch, num_classes, trained_frames=None, ...)`` builds any registered model (`model_names()`); every
model is a `VideoModel` (model/interface.py); `convert_to_ffn` (model/ffn_parts.py) turns a plain network into an
FFN; a family registers its training recipes (`register_recipe`), found by arch with `model_recipe`.
"""

from model.ffn_parts import BranchNorm, WeightAlteration, WeightAlterationSlot, branch_scope, convert_to_ffn
from model.interface import InputSpec, VideoModel, nearest_branch
from model.losses import cross_entropy, distillation_loss
from model.official_checkpoints import CheckpointPayloadError, load_checkpoint_file, load_official_state_dict
from model.optim import PARAM_GROUP_POLICIES, build_optimizer, build_param_groups
from model.registry import (
    build_model,
    model_family,
    model_names,
    model_options,
    model_recipe,
    recipe_names,
    register_model,
    register_recipe,
)
from model.temporal_shift import naive_temporal_shift, temporal_shift
from model.tsm_resnet import TSMResNet, count_parameters

__all__ = [
    "PARAM_GROUP_POLICIES",
    "BranchNorm",
    "CheckpointPayloadError",
    "InputSpec",
    "TSMResNet",
    "VideoModel",
    "WeightAlteration",
    "WeightAlterationSlot",
    "branch_scope",
    "build_model",
    "build_optimizer",
    "build_param_groups",
    "convert_to_ffn",
    "count_parameters",
    "cross_entropy",
    "distillation_loss",
    "load_checkpoint_file",
    "load_official_state_dict",
    "model_family",
    "model_names",
    "model_options",
    "model_recipe",
    "naive_temporal_shift",
    "nearest_branch",
    "recipe_names",
    "register_model",
    "register_recipe",
    "temporal_shift",
]
