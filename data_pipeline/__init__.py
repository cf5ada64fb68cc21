"""Streaming multi-frame-count loading of packed JPEG-frame shards: sampling, decoding, augmentation.

Entry points: `build_loader` (batches for train.py / evaluate.py, its options defined once by `PipelineConfig`),
the decode backends behind one `Decoder` protocol (`DECODERS`,
`make_decoder`: data_pipeline.decode; `batch_on_device` finishes any decoder's batch on a device),
`data_pipeline.sampling` (pure frame-index sampling) and `data_pipeline.augment` (pure crop-box choice).
`decode_one_video` makes the same evaluation batch from one video's JPEG frames held in memory (predict.py).
"""

from data_pipeline.decode import DECODERS, Decoder, make_decoder
from data_pipeline.loader import (
    VideoLoader,
    batch_on_device,
    build_loader,
    decode_one_video,
)
from data_pipeline.options import DEFAULT_SHUFFLE_BUFFER, PipelineConfig, add_loader_arguments, loader_options
from data_pipeline.sampling import indices_by_frames, plan_frames, sample_indices

__all__ = [
    "DECODERS",
    "DEFAULT_SHUFFLE_BUFFER",
    "Decoder",
    "PipelineConfig",
    "VideoLoader",
    "add_loader_arguments",
    "batch_on_device",
    "build_loader",
    "decode_one_video",
    "make_decoder",
    "indices_by_frames",
    "loader_options",
    "plan_frames",
    "sample_indices",
]
