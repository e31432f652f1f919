"""``ssl-video-submit``: the console script for ``launch/submit.py`` (same arguments, same behaviour).

``launch/submit.py`` stays the one implementation (it must keep working as ``python launch/submit.py`` from a
checkout). This entry point runs that file as ``__main__``, exactly as ``python launch/submit.py ARGS`` would: its
``TrainingJob`` is then defined in ``__main__``, which submitit's cloudpickle serialises by value, so the job
unpickles on the compute nodes without a module named after this file (importing it under another name would make
cloudpickle pickle the class by reference to a module the nodes cannot import).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SUBMIT = Path(__file__).resolve().parent.parent / "launch" / "submit.py"


def main(argv: list[str] | None = None) -> int:
    """Run ``launch/submit.py`` with ``argv`` (default: this process's arguments); returns its exit status."""
    if not SUBMIT.is_file():
        sys.exit(f"error: {SUBMIT} not found: ssl-video-submit needs a source checkout (pip install -e .)")
    args = sys.argv[1:] if argv is None else list(argv)
    saved = sys.argv
    sys.argv = [str(SUBMIT), *args]  # submit.py parses sys.argv, as a script does
    try:
        runpy.run_path(str(SUBMIT), run_name="__main__")
    except SystemExit as exc:  # submit.py ends with sys.exit(main()); errors exit with "error: ..."
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
