"""The write side of the shards: videos and takes in, WebDataset shards + manifest out (``tools/make_shards.py``)."""
