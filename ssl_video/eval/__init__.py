"""Evaluations: DAVIS-2017 label propagation (J&F), online action detection, cross-camera retrieval, superpixels.

Submodules are imported on demand (``python -m ssl_video.eval.davis ...``) so importing the package stays cheap.
"""
