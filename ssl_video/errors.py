"""The project's user-facing error: a configuration or input problem, described in one line.

It lives below every part (config composition, methods, optimisers, evaluations raise it) so that no part has to
import :mod:`ssl_video.config` to report a bad setting; ``ssl_video.config`` re-exports it.
"""


class ConfigError(ValueError):
    """A configuration problem, described in one line (commands print ``error: <message>`` and exit 2)."""
