"""Pack videos into WebDataset shards: ``python tools/make_shards.py pack.kind=kinetics pack.input=ROOT ...``.

See ``ssl_video/data/packing.py`` and ``shards/README.md``; ``--help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout without installing

from ssl_video.data.packing import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
