"""TSM-ResNet and TSM-FFN models, temporal shift, official checkpoint loading."""

from model.device import get_device

__all__ = ["get_device"]
