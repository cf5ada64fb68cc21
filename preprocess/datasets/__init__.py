"""The datasets `make shards` reads (``--dataset NAME``), each as it is distributed; one module per layout.

Adding one: write ``preprocess/datasets/<name>.py`` defining ``DATASET = Dataset(...)`` with a ``read`` function
that returns a :class:`DatasetIndex` (see base.py and docs/data.md), then add it to `DATASETS` below.
"""

from __future__ import annotations

from preprocess.datasets import hmdb51, k400, ssv1, ssv2, tsm_list
from preprocess.datasets.base import (
    SOURCE_FRAMES,
    SOURCE_VIDEO,
    AnnotationError,
    Dataset,
    DatasetIndex,
    VideoEntry,
    entries_digest,
)

DATASETS: dict[str, Dataset] = {
    module.DATASET.name: module.DATASET for module in (ssv2, ssv1, k400, hmdb51, tsm_list)
}
DEFAULT_DATASET = "ssv2"


def get_dataset(name: str) -> Dataset:
    """Return the registered dataset `name`.

    Raises
    ------
    KeyError
        Naming the registered datasets.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "SOURCE_FRAMES",
    "SOURCE_VIDEO",
    "AnnotationError",
    "Dataset",
    "DatasetIndex",
    "VideoEntry",
    "entries_digest",
    "get_dataset",
]
