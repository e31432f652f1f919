"""ssl-video: self-supervised representation learning from video at cluster scale."""

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).resolve().parent
# setuptools writes build/ and *.egg-info beside setup.py by default: build in a fresh temporary folder instead, so
# `pip install .` / `pip wheel .` leave the source tree as it was and never ship stale files from an earlier build
OUT_OF_TREE = Path(tempfile.mkdtemp(prefix="ssl-video-build-"))
atexit.register(shutil.rmtree, OUT_OF_TREE, ignore_errors=True)

# slic_fast's CPU kernel (plain C, CPython API + buffer protocol: no numpy headers needed to build). optional: where it
# does not compile the install still succeeds and slic_fast runs its torch path on CPU
# (ssl_video.superpixels.segment.cpu_kernel() says which and why). No fused multiply-add: the kernel must round as the
# torch path does
SLIC_KERNEL = Extension(
    "ssl_video.superpixels._slic",
    sources=["ssl_video/superpixels/_slic.c", "ssl_video/superpixels/_slic_connectivity.c"],
    depends=["ssl_video/superpixels/_slic.h"],
    extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-ffp-contract=off"],
    optional=True,
)

setup(
    name="ssl-video",
    version="0.1.0",
    description="Self-supervised video representation learning (MoCo v2, SimCLR, BYOL, SimSiam, "
    "contrastive random walks) from WebDataset shards, on SLURM through submitit.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ssl_video", "ssl_video.*"]),
    # the YAML configs are package data: an installed ssl-video composes configs without a checkout
    package_data={"ssl_video": ["configs/*.yaml", "configs/*/*.yaml"]},
    ext_modules=[SLIC_KERNEL],
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy",
        "omegaconf>=2.3",
        "webdataset>=1.0,<1.1",
        "decord==0.6.0",
        "av>=12",
        "scikit-image>=0.22",
        "scipy",
        "pillow",
        "tensorboard",
        "tqdm",
        "submitit>=1.5",
        "pytorchvideo==0.1.5",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout", "pytest-xdist>=3", "ruff", "torchcodec>=0.17"],
        "torchcodec": ["torchcodec>=0.17"],  # data.decoder=torchcodec / gpu (NVDEC); needs FFmpeg's shared libraries
        # the superpixel benchmark's peer; fast-slic builds from source and needs cython installed first:
        # pip install cython && pip install --no-build-isolation fast-slic
        "bench": ["fast-slic>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "ssl-video-train=ssl_video.train:main",
            "ssl-video-submit=ssl_video.launch:main",
            "ssl-video-make-shards=ssl_video.packing.cli:main",
            "ssl-video-make-synthetic=ssl_video.synthetic.generate:main",
            "ssl-video-inspect-shards=ssl_video.packing.inspect_shards:main",
            "ssl-video-export=ssl_video.export:main",
            "ssl-video-eval-davis=ssl_video.eval.davis:main",
            "ssl-video-eval-online-action=ssl_video.eval.online_action:main",
            "ssl-video-eval-retrieval=ssl_video.eval.retrieval:main",
            "ssl-video-eval-superpixels=ssl_video.eval.superpixel_benchmark:main",
        ],
    },
    options={"build": {"build_base": str(OUT_OF_TREE / "build")}, "egg_info": {"egg_base": str(OUT_OF_TREE)}},
)
