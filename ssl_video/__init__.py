"""ssl-video: self-supervised representation learning from video."""

__version__ = "0.1.0"
