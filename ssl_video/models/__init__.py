"""Backbones and heads."""

from ssl_video.models.backbones import BackboneConfig, build_backbone, pooled_features, register_backbone

__all__ = ["BackboneConfig", "build_backbone", "pooled_features", "register_backbone"]
