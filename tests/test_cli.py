"""`drama info`: resolved config, the paper model's parameter counts, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drama.cli import main

ROOT = Path(__file__).resolve().parents[1]
ATARI = str(ROOT / "conf/atari.yaml")


def info(capsys, *overrides: str) -> tuple[str, dict]:
    assert main(["info", "--config", ATARI, *overrides]) == 0
    out = capsys.readouterr().out
    return out, json.loads(out.strip().splitlines()[-1])


def test_paper_parameter_counts_pong(capsys):
    out, counts = info(capsys)
    assert "backbone:" in out and "name: mamba2" in out and "id: ALE/Pong-v5" in out
    assert counts == {
        "encoder": 232_272,
        "decoder": 1_281_811,
        "latent_heads": 1_574_912,
        "dynamics": 3_737_504,
        "reward_head": 197_119,
        "termination_head": 131_841,
        "world_model_total": 7_155_459,
        "actor": 527_366,
        "critic": 1_444_607,
    }


def test_parameter_counts_with_18_actions(capsys):
    _, counts = info(capsys, "env.id=ALE/Alien-v5")
    assert counts["world_model_total"] == 7_161_603
    assert counts["dynamics"] == 3_737_504 + 12 * 512
    assert counts["actor"] == 527_366 + 12 * 257


@pytest.mark.parametrize(("backbone", "dynamics", "total"), [
    ("mamba2", 3_737_504, 7_155_459),
    ("mamba", 3_919_360, 7_337_315),
    ("transformer", 5_059_584, 8_477_539),
])
def test_paper_parameter_counts_per_backbone(capsys, backbone, dynamics, total):
    """The paper's parameter counts of the world model with each backbone (A = 6 actions)."""
    out, counts = info(capsys, f"world_model.backbone.name={backbone}")
    assert f"name: {backbone}" in out
    assert counts["dynamics"] == dynamics and counts["world_model_total"] == total
    assert counts["encoder"] == 232_272 and counts["actor"] == 527_366


def test_gru_backbone_has_the_same_stem_and_width(capsys):
    _, counts = info(capsys, "world_model.backbone.name=gru")
    stem = 1030 * 512 + 512 + 512  # Linear(1030 -> 512, bias) + RMSNorm(512)
    gru = 2 * 3 * (512 * 512 + 512 * 512 + 2 * 512)  # 2 layers x 3 gates x (W_ih, W_hh, b_ih, b_hh)
    assert counts["dynamics"] == stem + gru
    assert counts["world_model_total"] == 7_155_459 - 3_737_504 + stem + gru


def test_vector_observations_use_mlp_encoder(capsys):
    out, counts = info(capsys, "env.id=CartPole-v1")
    assert "observation [4], 2 actions" in out
    assert counts["encoder"] < 232_272 and counts["dynamics"] == 3_737_504 - 4 * 512


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["info", "--config", ATARI, "world_model.nope=1"], "unknown key 'world_model.nope'"),
        (["info", "--config", ATARI, "world_model.hidden_dim=big"], "world_model.hidden_dim"),
        (["info", "--config", ATARI, "world_model.backbone.name=lstm"], "allowed: mamba2"),
        (["info", "--config", ATARI, "env.id=ALE/NoSuchGame-v5"], "env.id='ALE/NoSuchGame-v5'"),
        (["info", "--config", ATARI, "env.id=Pendulum-v1"], "Discrete"),
        (["info", "--config", "missing.yaml"], "config file not found"),
        (["info"], "--config"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drama: error: ") and needle in lines[0]


def test_a_huge_bad_value_gives_a_short_line_with_its_start_and_what_is_allowed(capsys):
    assert main(["info", "--config", ATARI, "world_model.backbone.name=" + "x" * 10_000_000]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and len(line) < 1000, len(line)
    assert line.startswith("drama: error: world_model.backbone.name='xxx"), line[:100]
    assert "characters cut" in line and line.endswith("allowed: mamba2, mamba, gru, transformer"), line[-200:]


def test_a_config_typo_in_fit_is_answered_before_torch_is_imported():
    """Validation first: ``drama fit`` with a bad key refuses without importing torch, Lightning or MLflow (the
    answer took 9-12 s on a loaded 2-core machine when they were imported first)."""
    code = ("import sys; from drama.cli import main; rc = main(['fit', '--config', 'debug', 'train.bogus=1']); "
            "print(rc, sorted(m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[0] == "2 []", result.stdout + result.stderr
    assert "unknown key 'train.bogus'" in result.stderr


def test_console_script_exit_code():
    result = subprocess.run([sys.executable, "-m", "drama", "info", "--config", ATARI, "train.batch_size=0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "drama: error: train.batch_size=0 is invalid: must be a positive integer"
