"""Write the synthetic data sets: ``python tools/make_synthetic.py --out data/synthetic --seed 0 [--size medium]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout without installing

from ssl_video.data.synthetic import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
