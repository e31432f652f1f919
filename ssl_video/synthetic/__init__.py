"""Synthetic data: DAVIS-style sequences, Kinetics-style clips and multi-camera takes, rendered from a seed."""
