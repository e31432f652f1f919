"""ssl-video: self-supervised representation learning from video at cluster scale."""

from setuptools import find_packages, setup

setup(
    name="ssl-video",
    version="0.1.0",
    description="Self-supervised video representation learning (MoCo v2, SimCLR, BYOL, SimSiam, "
    "contrastive random walks) from WebDataset shards, on SLURM through submitit.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ssl_video", "ssl_video.*"]),
    # the YAML configs are package data: an installed ssl-video composes configs without a checkout
    package_data={"ssl_video": ["configs/*.yaml", "configs/*/*.yaml"]},
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
        "dev": ["pytest>=8", "pytest-timeout", "ruff"],
        # the superpixel benchmark's peer; fast-slic builds from source and needs cython installed first:
        # pip install cython && pip install --no-build-isolation fast-slic
        "bench": ["fast-slic>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "ssl-video-train=ssl_video.train:main",
            "ssl-video-submit=ssl_video.launch_cli:main",
            "ssl-video-make-shards=ssl_video.packing.shards:main",
            "ssl-video-make-synthetic=ssl_video.synthetic.generate:main",
        ],
    },
)
