import ast
import math
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

import drama.config as config_module
from drama.config import RULES, ConfigError, DramaConfig, bounded_fields, load_config, satisfies, to_flat_dict, validate

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
        (["world_model.loss.representation_free_bits=-1"],
         "world_model.loss.representation_free_bits=-1.0 is invalid: must be null or a finite number >= 0"),
        (["actor_critic.bootstrap=v0"], "allowed: textbook, reference"),
        (["runtime.device=tpu"], "runtime.device"),
        (["runtime.device=cuda:x"], "runtime.device='cuda:x' is invalid: allowed: auto, cpu, cuda, cuda:N, mps"),
        (["runtime.precision=fp16"], "runtime.precision='fp16' is invalid: allowed: auto, 32-true, bf16-mixed"),
        (["runtime.compile=fast"], "allowed: none, default, reduce-overhead, max-autotune"),
        (["replay.device=tpu"], "replay.device='tpu' is invalid: allowed: auto, cpu, cuda"),
        (["env.reseed=never"], "env.reseed='never' is invalid: allowed: same, sequence"),
        (["env.noop_max=31"], "env.noop_max=31 is invalid: must be in [0, 30]"),
        (["world_model.two_hot.bins=1"], "world_model.two_hot.bins=1 is invalid"),
        (["world_model.two_hot.low=20"], "world_model.two_hot.low=20.0 is invalid: must be < world_model.two_hot.high"),
        (["actor_critic.return_percentiles=[0.9,0.1]"], "actor_critic.return_percentiles=[0.9, 0.1] is invalid"),
        (["world_model.optim.betas=[0.9]"], "world_model.optim.betas=[0.9] is invalid"),
        (["world_model.loss.reward=inf"], "world_model.loss.reward=inf is invalid: must be a finite number >= 0"),
        (["world_model.optim.lr=nan"], "world_model.optim.lr=nan is invalid: must be > 0"),
        (["runtime.run_name=.."], "runtime.run_name='..' is invalid: must be a plain folder name"),
        (["world_model.backbone.name=gru", "world_model.backbone.impl=kernel"], "kernels exist only for mamba2"),
        (["train.batch_length=200", "replay.capacity=100"], "train.batch_length=200 is invalid: must be <= replay"),
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


def test_device_names_with_an_index_are_accepted():
    assert load_config(None, ["runtime.device=cuda:1", "replay.device=cuda"]).runtime.device == "cuda:1"
    assert load_config(None, ["env.noop_max=30", "world_model.backbone.dropout=0"]).env.noop_max == 30


# ------------------------------------------------------------------ the renamed key
RENAMED_MESSAGE = ("train.warmup_steps was renamed to train.prefill_steps "
                   "(random-action env steps before the first update)")


def test_renamed_key_as_an_override_names_the_new_one():
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "conf/debug.yaml", ["train.warmup_steps=20"])
    assert str(info.value) == RENAMED_MESSAGE
    assert load_config(None, ["train.prefill_steps=20"]).train.prefill_steps == 20
    assert load_config(None, ["world_model.optim.warmup_steps=7"]).world_model.optim.warmup_steps == 7  # not renamed


def test_renamed_key_in_a_yaml_file_names_the_new_one(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  total_steps: 10\n  warmup_steps: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(old)
    assert str(info.value) == f"{old}: {RENAMED_MESSAGE}"


def test_renamed_key_on_the_command_line_is_a_one_line_exit_2(capsys):
    from drama.cli import main

    assert main(["info", "--config", str(ROOT / "conf/debug.yaml"), "train.warmup_steps=3"]) == 2
    assert capsys.readouterr().err.strip() == f"drama: error: {RENAMED_MESSAGE}"


# ------------------------------------------------------------------ bounds declared on the fields, walked generically
def _just_outside(value, name, arg):
    """Values that break rule ``name`` (argument ``arg``) of a field whose valid default is ``value``."""
    is_int = isinstance(value, int)
    if name == "choices":
        return [f"not-{value}"]
    if name == "ge":
        return [arg - 1 if is_int else math.nextafter(float(arg), -math.inf)]
    if name == "gt":
        return [type(value)(arg)]
    if name == "le":
        return [arg + 1 if is_int else math.nextafter(float(arg), math.inf)]
    if name == "lt":
        return [type(value)(arg)]
    if name == "finite":
        return [math.inf]
    if name == "length":
        return [value[:arg - 1], [*value, value[0]]]
    if name == "min_length":
        return [value[:arg - 1]]
    if name == "increasing":
        return [list(reversed(value))]
    if name == "excludes":
        return [f"a{arg[0]}b"]
    if name == "not_in":
        return list(arg)
    if name == "nullable":
        return []  # null passes; the field's other rules say what fails
    if name == "each":
        return [[bad, *value[1:]] for rule, rule_arg in arg.items() for bad in _just_outside(value[0], rule, rule_arg)]
    raise AssertionError(f"no out-of-bound value for rule {name!r}: extend _just_outside")


def _set(cfg, key, value):
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)
    return cfg


BOUNDED = list(bounded_fields(DramaConfig()))


def test_every_rule_is_used_and_the_defaults_pass():
    used = {name for _, _, bound in BOUNDED for name in bound if name != "allowed"}
    used |= {name for _, _, bound in BOUNDED for name in bound.get("each", {})}
    assert used == set(RULES)
    assert len(BOUNDED) >= 80
    for key, value, bound in BOUNDED:
        assert satisfies(value, bound), key
    assert not satisfies(None, {"allowed": "", "ge": 0}) and satisfies(None, {"allowed": "", "ge": 0, "nullable": True})


@pytest.mark.parametrize(("key", "default", "bound"), BOUNDED, ids=[key for key, _, _ in BOUNDED])
def test_a_value_just_outside_each_declared_bound_is_rejected_naming_its_key(key, default, bound):
    for name, arg in bound.items():
        if name == "allowed":
            continue
        for bad in _just_outside(default, name, arg):
            assert not satisfies(bad, bound), (key, name, bad)
            with pytest.raises(ConfigError) as info:
                validate(_set(DramaConfig(), key, bad))
            assert str(info.value) == f"{key}={bad!r} is invalid: {bound['allowed']}"


def _leaves(node, prefix=""):
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def test_only_these_fields_have_no_declared_bound():
    """A new field gets a bound where it is declared (or joins this list on purpose)."""
    unbounded = {key for key, f in _leaves(DramaConfig()) if not f.metadata}
    assert unbounded == {
        "env.id",  # checked by the env factory (unknown ids, action spaces)
        "world_model.two_hot.low", "world_model.two_hot.high",  # low < high is a cross-field rule of validate
        "train.stop_at_return",  # any return, or null
        "runtime.deterministic", "runtime.progress", "world_model.loss.detach_dynamics_input",  # booleans
        "runtime.experiment",  # any MLflow experiment name
    }


def test_every_switch_takes_its_allowed_values_from_one_module_constant():
    constants = {id(value) for name, value in vars(config_module).items() if name.isupper() and
                 isinstance(value, tuple)}
    choices = [(key, bound["choices"]) for key, _, bound in BOUNDED if "choices" in bound]
    assert len(choices) == 11
    for key, options in choices:
        assert id(options) in constants, key


# ------------------------------------------------------------------ conventions of config.py
CONFIG_SOURCE = Path(config_module.__file__).read_text()


def test_every_config_field_has_a_docstring():
    tree = ast.parse(CONFIG_SOURCE)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and
               any(isinstance(d, ast.Name) and d.id == "dataclass" for d in node.decorator_list)]

    def types(cls):
        yield cls.__name__
        for f in fields(cls):
            value = getattr(cls(), f.name)
            if is_dataclass(value):
                yield from types(type(value))

    assert {cls.name for cls in classes} == set(types(DramaConfig))
    for cls in classes:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                doc = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and \
                    isinstance(doc.value.value, str) and doc.value.value.strip(), f"{cls.name}.{node.target.id}"


def test_config_sits_above_the_packaged_configs_only_and_cites_nothing_outside_the_repository():
    tree = ast.parse(CONFIG_SOURCE)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert [name for name in imported if name == "drama" or name.startswith("drama.")] == ["drama.packaged_configs"]
    docs = " ".join(node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and
                    isinstance(node.value, str))
    assert not re.search(r"\bSPEC\b|STACK\.md|\bISSUE\b|\bdecisions? \d|\bB\d+\b", docs), \
        re.findall(r".{30}(?:SPEC|STACK|ISSUE|decisions? \d|\bB\d+\b).{30}", docs)
