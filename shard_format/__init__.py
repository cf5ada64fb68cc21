"""The shard format between the two stages: `preprocess` writes it, `data_pipeline` reads it.

- ``shard_format.sample``: names of shards, sidecars and manifests; the two tar members of a video; reading a
  sample's metadata and frames back; how frames are stored (short side, JPEG quality).
- ``shard_format.files``: deterministic tars, sidecars, manifests (assembled and read), the settings hash, and
  `write_jpeg_split` (a whole split from JPEG bytes, for tools and tests).

Standard library only, so shards can be written and read where neither ffmpeg nor torch is installed.
"""

from shard_format.files import (
    ManifestError,
    assemble_manifest,
    read_manifest,
    read_sidecar,
    settings_hash,
    shard_bounds,
    shard_is_complete,
    write_jpeg_split,
    write_sidecar,
    write_tar_atomic,
)
from shard_format.sample import (
    DEFAULT_QUALITY,
    DEFAULT_SHORT_SIDE,
    FORMAT_VERSION,
    MANIFEST_SUFFIX,
    QUALITY_RANGE,
    REQUIRED_META_KEYS,
    SHARD_SUFFIX,
    SIDECAR_SUFFIX,
    SPLITS,
    TEST_LABEL,
    MalformedSampleError,
    encode_sample,
    manifest_path,
    pack_frames,
    read_sample_meta,
    shard_name,
    sidecar_path,
    slice_frames,
)

__all__ = [
    "DEFAULT_QUALITY",
    "DEFAULT_SHORT_SIDE",
    "FORMAT_VERSION",
    "MANIFEST_SUFFIX",
    "QUALITY_RANGE",
    "REQUIRED_META_KEYS",
    "SHARD_SUFFIX",
    "SIDECAR_SUFFIX",
    "SPLITS",
    "TEST_LABEL",
    "ManifestError",
    "MalformedSampleError",
    "assemble_manifest",
    "encode_sample",
    "manifest_path",
    "pack_frames",
    "read_manifest",
    "read_sample_meta",
    "read_sidecar",
    "settings_hash",
    "shard_bounds",
    "shard_is_complete",
    "shard_name",
    "sidecar_path",
    "slice_frames",
    "write_jpeg_split",
    "write_sidecar",
    "write_tar_atomic",
]
