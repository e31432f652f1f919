"""Opening a shard set: data.root that webdataset would run through a shell is refused unless opted in; a shard set
with zero shards is one ConfigError line."""

from __future__ import annotations

import json
import shutil

import pytest

from ssl_video.config import ConfigError, load_config
from ssl_video.data.loader import build_loader, shard_list


def _cfg(root: str, *extra: str):
    return load_config(["method=walk_superpixel", f"data.root={root}", "data.crop_size=64", "data.num_workers=0",
                        "data.epoch_length=1", "data.shuffle_buffer=2", *extra]).data


@pytest.mark.parametrize("scheme", ["pipe:touch {marker}", "https://example.invalid/set;touch {marker}",
                                    "gs://bucket/set"])
def test_url_and_pipe_roots_are_refused_and_never_run(tmp_path, scheme):
    marker = tmp_path / "ran"
    root = scheme.format(marker=marker)
    with pytest.raises(ConfigError, match="set data.allow_pipe=true") as info:
        build_loader(_cfg(root), batch_size=1)
    assert "\n" not in str(info.value) and root in str(info.value)
    assert not marker.exists()  # nothing was executed


def test_pipe_root_works_when_allowed(kinetics_shards, tmp_path):
    marker = tmp_path / "ran"
    root = f"pipe:touch {marker}; cat {kinetics_shards / 'train'}"  # the opt-in runs it: shell and all
    local = shard_list(kinetics_shards / "train")
    assert shard_list(root, allow_pipe=True) == [f"{root}/{u.rsplit('/', 1)[1]}" for u in local]
    assert marker.exists()
    batch = next(iter(build_loader(_cfg(root, "data.allow_pipe=true"), batch_size=2)))
    assert batch["clips"].shape[0] == 2


def test_shard_set_without_shards_is_a_config_error(kinetics_shards, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = json.loads((kinetics_shards / "train" / "manifest.json").read_text())
    (empty / "manifest.json").write_text(json.dumps({**manifest, "shards": [], "packed": 0}))
    with pytest.raises(ConfigError, match=f"shard set {empty} lists no shards"):
        build_loader(_cfg(str(empty)), batch_size=1)


def test_file_url_is_a_local_folder(kinetics_shards, tmp_path):
    shutil.copytree(kinetics_shards / "train", tmp_path / "set")
    assert shard_list(f"file:{tmp_path / 'set'}") == shard_list(tmp_path / "set")
