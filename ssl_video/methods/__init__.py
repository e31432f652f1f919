"""Self-supervised methods, found by name through :mod:`ssl_video.methods.registry`."""

from ssl_video.methods.base import Method
from ssl_video.methods.registry import build_method, names, register

__all__ = ["Method", "build_method", "names", "register"]
