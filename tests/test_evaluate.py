"""`drama evaluate`: exactly N complete episodes under the evaluation protocol, the result JSON, MLflow records."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from drama.cli import main
from drama.evaluate import summarize
from drama.run import RunFolder


def _latest_json(run_dir):
    files = sorted((run_dir / "evaluations").glob("*.json"))
    assert files
    return json.loads(files[-1].read_text())


def test_evaluation_json_has_exactly_n_complete_episodes(finished_debug_run):
    result = _latest_json(finished_debug_run)
    assert result["episodes"] == 2 and len(result["returns"]) == len(result["lengths"]) == 2
    # 200 raw frames / action repeat 4 = the 50-step time limit of the tiny config: every episode ran to its end
    assert result["lengths"] == [50, 50]
    assert result["checkpoint_step"] == 60 and result["policy"] == "greedy" and result["seed"] == 1
    assert result["game"] == "Pong" and result["mean"] == pytest.approx(sum(result["returns"]) / 2)
    assert result["human_normalized"] == pytest.approx((result["mean"] + 20.7) / 35.3)
    protocol = result["protocol"]
    assert protocol["life_loss_signal"] is False and protocol["sticky_actions"] == 0.0
    assert protocol["policy"] == "greedy" and protocol["acting_window_reset"] == "at every episode start"


def test_evaluation_is_logged_to_the_runs_mlflow_record(finished_debug_run):
    info = RunFolder(finished_debug_run).read_info()
    client = mlflow.tracking.MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["mlflow_run_id"])
    result = _latest_json(finished_debug_run)
    assert run.data.metrics["eval/greedy/return_mean"] == pytest.approx(result["mean"])
    assert run.data.metrics["eval/greedy/human_normalized"] == pytest.approx(result["human_normalized"])
    history = client.get_metric_history(info["mlflow_run_id"], "eval/greedy/return_mean")
    assert [m.step for m in history] == [60]
    names = [a.path for a in client.list_artifacts(info["mlflow_run_id"], "evaluations")]
    assert "evaluations/step00000060-greedy-seed1-n2.json" in names
    videos = [a.path for a in client.list_artifacts(info["mlflow_run_id"], "evaluations/videos")]
    assert len(videos) == 2 and all(v.endswith(".gif") for v in videos)


def test_same_seed_same_returns_and_sampled_policy(finished_debug_run, capsys):
    assert main(["evaluate", str(finished_debug_run), "--episodes", "1", "--sample", "--seed", "7",
                 "--no-progress"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["policy"] == "sample" and first["episodes"] == 1
    assert main(["evaluate", str(finished_debug_run), "--episodes", "1", "--sample", "--seed", "7",
                 "--no-progress"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(open(first["path"]).read())["returns"] == json.loads(open(second["path"]).read())["returns"]


def test_summary_of_a_non_atari_env_has_no_human_normalised_score():
    summary = summarize([10.0, 30.0], "CartPole-v1")
    assert summary["game"] is None and summary["human_normalized"] is None
    assert summary["mean"] == 20.0 and summary["std"] == 10.0 and summary["median"] == 20.0


@pytest.mark.parametrize(("args", "needle"), [
    (["evaluate", "/nonexistent/run"], "not a drama run directory"),
    (["evaluate", "RUN", "--episodes", "0"], "--episodes=0 is invalid"),
    (["evaluate", "RUN", "--checkpoint", "/nonexistent.ckpt"], "no checkpoint at /nonexistent.ckpt"),
    (["evaluate", "RUN", "--greedy", "--sample"], "not allowed with argument"),
])
def test_bad_invocations_print_one_line_and_exit_2(finished_debug_run, capsys, args, needle):
    before = sorted((finished_debug_run / "evaluations").iterdir())
    args = [str(finished_debug_run) if a == "RUN" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("drama: error:")
    assert sorted((finished_debug_run / "evaluations").iterdir()) == before


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_evaluation_acts_under_the_runs_training_precision(finished_debug_run, tmp_path, monkeypatch, precision):
    """The acting step's world-model passes (encoding, sequence model, prior) run under the precision the run
    trained with (``runtime.precision``, ``auto`` resolved for this machine), not in float32 regardless."""
    import shutil

    from drama.evaluate import evaluate
    from drama.world_model import WorldModel

    run = tmp_path / "run"
    shutil.copytree(finished_debug_run, run)
    config = RunFolder(run).config
    config.write_text(config.read_text().replace("precision: auto", f"precision: {precision}"))
    assert f"precision: {precision}" in config.read_text()
    seen = []
    original = WorldModel.hidden_states

    def recording(self, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WorldModel, "hidden_states", recording)
    evaluate(run, episodes=1, progress=False)
    expected = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    assert len(seen) > 10 and set(seen) == {expected}


def _float32_copy(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run32"
    shutil.copytree(run_dir, run)
    config = RunFolder(run).config
    config.write_text(config.read_text().replace("precision: auto", "precision: 32-true"))
    return run


def test_k_envs_play_the_same_episodes_as_one_env(finished_debug_run, tmp_path):
    """K = 1 and K = 4 play episodes k = 0..N-1 with seeds S + k and the same lengths and returns (exactly, in
    float32 on this tiny model; batched kernels may round differently, which could flip a sample in longer runs);
    N = 5 is not a multiple of 4 and still gives exactly 5 episodes. Sampled actions, so episodes differ."""
    from drama.build import load_agent
    from drama.evaluate import play_episodes

    agent = load_agent(_float32_copy(finished_debug_run, tmp_path))
    played = {k: play_episodes(agent.cfg, agent.world_model, agent.actor_critic, 5, greedy=False, seed=7,
                               record=True, progress=False, envs=k) for k in (1, 4)}
    assert played[1]["seeds"] == played[4]["seeds"] == [7, 8, 9, 10, 11]
    assert played[1]["lengths"] == played[4]["lengths"] and len(played[4]["returns"]) == 5
    assert played[1]["returns"] == played[4]["returns"]
    for one, four in zip(played[1]["frames"], played[4]["frames"], strict=True):  # the same trajectories, frame
        assert (one == four).all()  # by frame (the paddle follows the actions)
    first = played[1]["frames"][0]
    assert any((first != other).any() for other in played[1]["frames"][1:])  # and the episodes differ


def test_evaluate_records_k_and_defaults_to_at_most_16_envs(finished_debug_run, tmp_path, capsys):
    run = _float32_copy(finished_debug_run, tmp_path)
    assert main(["evaluate", str(run), "--episodes", "3", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["envs"] == 3 and printed["episodes"] == 3
    result = json.loads(Path(printed["path"]).read_text())
    assert result["envs"] == result["protocol"]["envs"] == 3 and result["episode_seeds"] == [1, 2, 3]
    assert main(["evaluate", str(run), "--episodes", "3", "--envs", "2", "--no-progress", "--seed", "5"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["envs"] == 2
