"""Streaming multi-rate loading of packed JPEG-frame shards: sampling, decoding, augmentation."""
