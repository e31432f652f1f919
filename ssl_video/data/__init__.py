"""Data: synthetic generators, shard packing, decoding, sampling, augmentation, superpixels, loader."""
