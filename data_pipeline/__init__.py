"""Streaming multi-rate loading of packed JPEG-frame shards: sampling, decoding, augmentation.

Entry points: `build_loader` (batches for train.py / evaluate.py, its options defined once by `PipelineConfig`),
`reduce_counts` (evaluation totals over ranks), the decode backends behind one `Decoder` protocol (`DECODERS`,
`make_decoder`: data_pipeline.decode; `batch_on_device` finishes any decoder's batch on a device),
`data_pipeline.sampling` (pure frame-index sampling) and `data_pipeline.augment` (pure crop-box choice).
`decode_one_video` makes the same evaluation batch from one video's JPEG frames held in memory (predict.py).
"""

from data_pipeline.counts import reduce_counts
from data_pipeline.decode import DECODERS, Decoder, make_decoder
from data_pipeline.loader import (
    DEFAULT_SHUFFLE_BUFFER,
    PipelineConfig,
    VideoLoader,
    batch_on_device,
    build_loader,
    decode_one_video,
)
from data_pipeline.sampling import multi_rate_indices, plan_frames, sample_indices

__all__ = [
    "DECODERS",
    "DEFAULT_SHUFFLE_BUFFER",
    "Decoder",
    "PipelineConfig",
    "VideoLoader",
    "batch_on_device",
    "build_loader",
    "decode_one_video",
    "make_decoder",
    "multi_rate_indices",
    "plan_frames",
    "reduce_counts",
    "sample_indices",
]
