"""Pack videos into WebDataset shards: ``python tools/make_shards.py pack.kind=kinetics pack.input=ROOT ...``.

Add ``--slurm --nodes N`` to pack on a SLURM cluster. See docs/packing.md and shards/README.md; ``--help`` lists
the flags.
"""

from ssl_video.packing.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
