"""Superpixels for packing and training: :mod:`.segment` (the entry point, slic_fast), :mod:`.connectivity`,
:mod:`.kernel` (slic_fast's C kernel for CPU, built from ``_slic.c`` by setup.py)."""
