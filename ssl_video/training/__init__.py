"""The trainer in parts (docs/training.md); ``ssl_video.train`` puts them together.

- ``setup``: process group, device, seeds, run folder (lock, resume decision), method / optimiser / schedule;
- ``step.train_step``: one training step, the only copy (benchmarks and tests call it too);
- ``logs``: TensorBoard; ``stop``: signals and the cross-rank stop agreement; ``loop``: epochs and checkpoints;
- ``run_dir``: run folders, lock, config comparison; ``errors``: the one-line errors (exit 2).
"""
