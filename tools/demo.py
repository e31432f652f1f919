"""`make demo`: synthetic data -> shards (if absent) -> a short walk_superpixel run on CPU -> where the logs are.

Each stage is the same command a researcher would type (printed before it runs), so the demo doubles as a tour.
Extra ``key=value`` arguments go to the trainer, e.g. ``python tools/demo.py train.steps=100``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RAW = REPO / "data" / "synthetic"
SHARDS = REPO / "shards" / "synthetic" / "kinetics"
RUN = REPO / "runs" / "demo"


def run(cmd: list[str]) -> None:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    start = time.time()
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"error: demo step failed (exit {result.returncode}): {shlex.join(cmd)}")
    print(f"  ({time.time() - start:.0f} s)", flush=True)


def main(argv: list[str]) -> None:
    py = sys.executable
    if not (SHARDS / "train" / "manifest.json").is_file():
        if not (RAW / "kinetics" / "train.csv").is_file():
            run([py, "tools/make_synthetic.py", "--out", str(RAW), "--seed", "0", "--what", "kinetics,davis"])
        run(
            [
                py, "tools/make_shards.py",
                "pack.kind=kinetics",
                f"pack.input={RAW / 'kinetics'}",
                f"pack.output={SHARDS}",
                "pack.workers=2",
            ]
        )  # fmt: skip
    else:
        print(f"shards found: {SHARDS} (delete them to rebuild)")
    run(
        [
            py, "-m", "ssl_video.train",
            "method=walk_superpixel",
            "data=synthetic",
            f"data.root={SHARDS / 'train'}",
            "train.device=cpu",
            "train.steps=30",
            "train.batch_size=4",
            "train.log_every=5",
            "train.image_every=10",
            "train.ckpt_every=15",
            f"train.out_dir={RUN}",
            *argv,
        ]
    )  # fmt: skip
    print(f"\nDone. TensorBoard logs: {RUN / 'tb'}\n  tensorboard --logdir {RUN}")


if __name__ == "__main__":
    main(sys.argv[1:])
