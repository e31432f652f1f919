"""Self-supervised methods, listed by name in :data:`ssl_video.methods.registry.METHODS`."""

from ssl_video.methods.base import Method, MethodConfig
from ssl_video.methods.registry import METHODS, build_method, names, register

__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "names", "register"]
