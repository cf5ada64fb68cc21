"""Offline preprocessing: SSv2-format annotations, synthetic data, .webm videos to packed JPEG-frame shards."""
