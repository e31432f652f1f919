"""The trainer's user-facing errors: each is one line, and ``python -m ssl_video.train`` exits 2 on it.

A ``RunError`` is a problem of the configuration, the input data or the environment (a full disk, a corrupt
checkpoint, a run folder in use), never a bug: the command prints ``error: <message>`` and no traceback.
"""

from __future__ import annotations


class RunError(RuntimeError):
    """A configuration / input / environment problem, described in one line (exit status 2)."""


class NonFiniteLoss(RunError):
    """The loss became NaN or inf; the run stops before the weights change and the last checkpoint is kept."""


class CheckpointError(RunError):
    """A checkpoint could not be written (disk full, I/O error) or none of the existing ones could be read."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` reduced to one line.

    Errors raised in a DataLoader worker come back as ``Caught X in DataLoader worker process 0. Original Traceback
    ... X: message``: the last line naming the original exception is the one that says what went wrong.
    """
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text:
        return lines[-1]
    return lines[0] if lines else type(exc).__name__
