"""Backbones and heads."""

from ssl_video.models.backbones import build_backbone, register_backbone

__all__ = ["build_backbone", "register_backbone"]
