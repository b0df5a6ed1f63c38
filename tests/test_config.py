"""Config files and overrides: typed, validated, with suggestions for typos (one loader for every task)."""

from __future__ import annotations

import re

import pytest

from splitattn.classification.config import load_classification_config as load_config
from splitattn.engine.config import ConfigError, parse_overrides

ROOT = ["data.root=/data"]


def test_defaults_are_the_released_recipe():
    cfg = load_config(None, ROOT)
    assert cfg.model.name == "resnest50" and cfg.base_lr() == pytest.approx(3.2)
    assert (cfg.optim.epochs, cfg.optim.warmup_epochs, cfg.optim.label_smoothing, cfg.optim.mixup) == (270, 5, 0.1, 0.2)


def test_overrides_are_typed_yaml_scalars_and_nest():
    cfg = load_config("configs/imagenet/resnest101.yaml",
                      ["optim.epochs=30", "optim.lr=0.05", "engine.amp=bf16", "model.overrides.norm_layer=gn",
                       "data.val_subset=null"])
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.engine.amp) == (30, 0.05, "bf16")
    assert cfg.model.overrides == {"norm_layer": "gn"} and cfg.data.val_subset is None
    assert cfg.optim.batch_size == 4096  # untouched keys keep the file's values
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize("overrides,message", [
    (["optim.lrr=1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    (["optimm.lr=1"], "unknown config key 'optimm'; did you mean 'optim'?"),
    (["optim.epochs=ten"], "optim.epochs: expected an integer, got 'ten'"),
    (["optim.nesterov=1"], "optim.nesterov: expected true or false"),
    (["engine.amp=bf18"], "'bf18' is not one of 'none' | 'bf16' | 'fp16' (did you mean 'bf16'?)"),
    (["optim.label_smoothing=1.5"], "label_smoothing must be in [0, 1)"),
    (["optim.warmup_epochs=300"], "warmup_epochs <= epochs"),
    (["optim.cutmix=-1"], "optim.cutmix >= 0"),
    (["epochs=3"], "needs a section, e.g. optim.epochs"),
    (["optim.epochs"], "is not key=value"),
])
def test_bad_values_and_keys_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, ROOT + overrides)
    assert message in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="data.root is empty"):
        load_config(None, [])


def test_every_task_shares_the_engine_section_and_its_checks():
    from splitattn.detection.config import load_detect_config
    from splitattn.engine.config import EngineConfig
    from splitattn.segmentation.config import load_segment_config

    for load in (load_detect_config, lambda path, overrides: load_config(path, ROOT + overrides)):
        cfg = load(None, ["engine.checkpoint_every_steps=7", "engine.sync_bn=true", "optim.accum_steps=2"])
        assert isinstance(cfg.engine, EngineConfig)
        assert (cfg.engine.checkpoint_every_steps, cfg.engine.sync_bn, cfg.optim.accum_steps) == (7, True, 2)
    segment = load_segment_config(None, ["engine.channels_last=true"])
    assert segment.engine.channels_last and segment.engine.out_dir == "runs/segment"
    for overrides, message in [(["engine.log_every_steps=0"], "log_every_steps must be >= 1"),
                               (["engine.checkpoint_every_iters=5"], "did you mean 'engine.checkpoint_every_steps'"),
                               (["optim.accum_steps=0"], "accum_steps must be >= 1"),
                               (["engine.overwrite=true", "engine.resume=auto"], "exclude each other")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_detect_config(None, overrides)
    with pytest.raises(ConfigError, match="needs data.num_classes"):
        load_segment_config(None, ["data.dataset=folder"])
