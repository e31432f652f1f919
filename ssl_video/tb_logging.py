"""What a run tells TensorBoard about itself: the resolved config (Text tab) and its hyper-parameters with the final
metrics (HParams tab), so runs can be compared side by side.

    log_run_config(writer, cfg)                        # tag "Config/resolved": the YAML the run used
    log_hparams(writer, cfg, {"loss": 4.1}, step=N)    # HParams: HPARAM_KEYS values + "hparams/loss"

``writer`` is the run's own ``torch.utils.tensorboard.SummaryWriter`` (``<out_dir>/tb``): the hparams summaries go
into that run, not into a timestamped sub-run as ``SummaryWriter.add_hparams`` would make.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import OmegaConf

CONFIG_TAG = "Config/resolved"
METRIC_PREFIX = "hparams/"
# the settings that tell runs apart; a missing key is skipped (configs of older versions)
HPARAM_KEYS = (
    "method.name", "backbone.name", "data.name", "data.crop_size", "data.clip_len", "data.num_views", "data.augment",
    "optim.name", "optim.lr", "optim.weight_decay", "optim.schedule", "optim.warmup_steps", "train.batch_size",
    "train.steps", "train.seed", "launch.nodes", "launch.gpus_per_node",
)  # fmt: skip


def log_run_config(writer, cfg, step: int = 0) -> None:
    """The resolved config as text (a Markdown code block, so TensorBoard keeps the YAML's indentation)."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    writer.add_text(CONFIG_TAG, "\n".join("    " + line for line in text.splitlines()), step)


def hparam_values(cfg) -> dict[str, int | float | str | bool]:
    """The :data:`HPARAM_KEYS` of ``cfg`` as TensorBoard accepts them (numbers, strings, booleans)."""
    values = {}
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def log_hparams(writer, cfg, metrics: Mapping[str, float], step: int = 0) -> None:
    """Record the run's hyper-parameters and ``metrics`` (e.g. the final loss) for the HParams tab.

    Each metric is also written as the scalar ``hparams/<name>`` at ``step``: the HParams tab reads its value from
    that scalar."""
    from torch.utils.tensorboard.summary import hparams

    tags = {f"{METRIC_PREFIX}{name}": float(value) for name, value in metrics.items()}
    experiment, start, end = hparams(hparam_values(cfg), tags)
    file_writer = writer._get_file_writer()  # the public add_hparams would open another run
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    for tag, value in tags.items():
        writer.add_scalar(tag, value, step)
    writer.flush()
