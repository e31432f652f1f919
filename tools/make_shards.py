"""Pack videos into WebDataset shards: ``python tools/make_shards.py pack.kind=kinetics pack.input=ROOT ...``.

See ``ssl_video/packing/shards.py`` and ``shards/README.md``; ``--help`` lists the flags.
"""



from ssl_video.packing.shards import main

if __name__ == "__main__":
    raise SystemExit(main())
