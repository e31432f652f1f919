"""One command per results table: ``python tools/reproduce.py judo_table|walk_table|superpixel_table --scale
smoke|cpu|paper`` (see ssl_video/experiments/reproduce.py and docs/reproduce.md)."""

from ssl_video.experiments.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
