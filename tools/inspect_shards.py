"""Inspect a shard set: ``python tools/inspect_shards.py shards/out/train [--sample 0] [--png sample.png]``.

The same command as the installed ``ssl-video-inspect-shards``; the code is ``ssl_video/packing/inspect_shards.py``.
"""

from ssl_video.packing.inspect_shards import main

if __name__ == "__main__":
    raise SystemExit(main())
