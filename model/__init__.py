"""TSM-ResNet and TSM-FFN models, temporal shift, official checkpoint loading, loss and optimizer factory."""

from model.device import get_device
from model.factory import build_model
from model.losses import distillation_loss
from model.official_checkpoints import CheckpointPayloadError, load_checkpoint_file, load_official_state_dict
from model.optim import build_optimizer, build_param_groups
from model.temporal_shift import naive_temporal_shift, temporal_shift
from model.tsm_resnet import TSMResNet, count_parameters

__all__ = [
    "CheckpointPayloadError",
    "TSMResNet",
    "build_model",
    "build_optimizer",
    "build_param_groups",
    "count_parameters",
    "distillation_loss",
    "get_device",
    "load_checkpoint_file",
    "load_official_state_dict",
    "naive_temporal_shift",
    "temporal_shift",
]
