"""Shared fixtures: tiny real shards (synthetic clips as JPEG frames, packed by shard_format)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import write_split

SplitSpec = tuple[Sequence[dict[str, Any]], Sequence[int]]


@pytest.fixture(scope="package")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory writing splits into a fresh folder: ``tiny_shards(name, train=(videos, shard_sizes), ...)``.

    Each keyword is a split name; its videos (pipeline_helpers.make_videos, altered at will) go into shards holding
    `shard_sizes` videos each (empty shards and uneven sizes allowed). Returns the folder, ready for build_loader.
    """

    def write(name: str, **splits: SplitSpec) -> Path:
        root = tmp_path_factory.mktemp(name)
        for split, (videos, shard_sizes) in splits.items():
            write_split(root, split, videos, shard_sizes)
        return root

    return write
