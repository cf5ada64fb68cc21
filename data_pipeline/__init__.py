"""Streaming multi-rate loading of packed JPEG-frame shards: sampling, decoding, augmentation.

Entry points: `build_loader` (batches for train.py / evaluate.py), `reduce_counts` (evaluation totals over ranks),
`data_pipeline.sampling` (pure frame-index sampling) and `data_pipeline.augment` (pure crop-box choice).
"""

from data_pipeline.counts import reduce_counts
from data_pipeline.loader import DEFAULT_SHUFFLE_BUFFER, VideoLoader, build_loader
from data_pipeline.sampling import multi_rate_indices, plan_frames, sample_indices

__all__ = [
    "DEFAULT_SHUFFLE_BUFFER",
    "VideoLoader",
    "build_loader",
    "multi_rate_indices",
    "plan_frames",
    "reduce_counts",
    "sample_indices",
]
