from pathlib import Path

import pytest

from drama.config import ConfigError, DramaConfig, load_config, to_flat_dict

ROOT = Path(__file__).resolve().parents[1]


def test_atari_yaml_is_the_paper_defaults():
    assert load_config(ROOT / "conf/atari.yaml") == DramaConfig()
    cfg = DramaConfig()
    assert cfg.world_model.backbone.name == "mamba2" and cfg.world_model.hidden_dim == 512
    assert cfg.world_model.optim.lr == 4e-5 and cfg.world_model.optim.eps == 1e-20
    assert cfg.world_model.optim.max_grad_norm == 1000 and cfg.actor_critic.optim.max_grad_norm == 100
    assert (cfg.actor_critic.gamma, cfg.actor_critic.lambda_) == (0.985, 0.95)
    assert cfg.world_model.loss.representation == 0.1 and cfg.world_model.loss.free_bits == 1.0
    assert (cfg.imagination.batch_size, cfg.imagination.context_length, cfg.imagination.horizon) == (1024, 8, 16)


def test_overrides_are_typed():
    cfg = load_config(None, ["world_model.hidden_dim=64", "world_model.optim.lr=1e-3",
                             "world_model.encoder.mults=[1,2]", "actor_critic.bootstrap=reference"])
    assert cfg.world_model.hidden_dim == 64 and cfg.world_model.optim.lr == 1e-3
    assert cfg.world_model.encoder.mults == [1, 2] and cfg.actor_critic.bootstrap == "reference"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["world_model.no_such_key=1"], "world_model.no_such_key"),
        (["world_model.hidden_dim=abc"], "world_model.hidden_dim"),
        (["world_model.hidden_dim=2.5"], "world_model.hidden_dim"),
        (["world_model.hidden_dim=-4"], "world_model.hidden_dim"),
        (["world_model.backbone.name=lstm"], "allowed: mamba2, mamba, gru, transformer"),
        (["world_model.backbone.impl=triton"], "allowed: auto, torch, kernel"),
        (["world_model.backbone.name=transformer", "world_model.backbone.max_length=64"],
         "world_model.backbone.max_length=64 is invalid: must be >= 128"),
        (["world_model.backbone.name=transformer", "world_model.backbone.heads=7"], "world_model.backbone.heads"),
        (["world_model.backbone.dropout=1.0"], "world_model.backbone.dropout"),
        (["world_model.backbone.headdim=100"], "world_model.backbone.headdim"),
        (["world_model.loss.free_bits_mode=sometimes"], "allowed: batch, step"),
        (["actor_critic.bootstrap=v0"], "allowed: textbook, reference"),
        (["runtime.device=tpu"], "runtime.device"),
        (["noequals"], "key=value"),
    ],
)
def test_bad_values_give_one_line_errors(overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_backbone_specific_checks_apply_only_to_their_backbone():
    cfg = load_config(None, ["world_model.backbone.name=gru", "world_model.backbone.headdim=100",
                             "world_model.backbone.heads=7", "world_model.backbone.max_length=8"])
    assert cfg.world_model.backbone.name == "gru"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("world_model:\n  hidden_dim: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trainer:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="trainer"):
        load_config(unknown)


def test_flat_dict_has_dotted_keys():
    flat = to_flat_dict(DramaConfig())
    assert flat["world_model.backbone.name"] == "mamba2" and flat["runtime.seed"] == 3710
