"""``drama evaluate``: exactly N complete episodes of a trained agent under the evaluation protocol.

Protocol (docs/decisions.md, "Evaluation protocol"; the reference's evaluation defects it fixes are listed there):

* the training env stack of the run (same action repeat, max-pool, resize, no sticky actions, no-op setting,
  time limit) **without the life-loss signal**; one env, episodes played one after another, so every one of the
  N episodes runs to its end (terminated or time limit) and short episodes are not favoured;
* episode ``k`` resets with seed ``S + k`` (``--seed S``, default: the run's seed), so episodes differ and the
  evaluation is reproducible;
* the acting window (16 frames and actions) is cleared at each episode start; the first action of an episode,
  with an empty window, is random, as in training; afterwards the policy acts on ``[ẑ_t, h_{t-1}]``, greedily
  (argmax, the default) or sampled (``--sample``);
* human-normalised score with the standard unrounded random/human constants (:mod:`drama.scores`).

The result JSON (raw returns, lengths, mean, std, human-normalised score, protocol, checkpoint step) is written to
``<run_dir>/evaluations/`` and logged, with the same numbers as metrics, to the run's MLflow record.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from drama.config import SEED_MAX, ConfigError, DramaConfig
from drama.preflight import check_evaluation
from drama.run import RunFolder, load_agent


def protocol(cfg: DramaConfig, greedy: bool, seed: int) -> dict[str, Any]:
    """The evaluation protocol as data (stored with every result)."""
    return {
        "env_id": cfg.env.id, "action_repeat": cfg.env.action_repeat, "noop_max": cfg.env.noop_max,
        "sticky_actions": 0.0, "full_action_space": False, "life_loss_signal": False,
        "max_episode_frames": cfg.env.max_episode_frames, "episode_seeds": f"{seed} + k",
        "policy": "greedy" if greedy else "sample", "acting_context": cfg.train.acting_context,
        "acting_window_reset": "at every episode start", "first_action": "random (empty acting window)",
        "episodes": "played one after another to completion (no short-episode bias)",
        "normalisation": "unrounded random/human scores (drama.scores)",
    }


@torch.no_grad()
def play_episodes(cfg: DramaConfig, world_model, actor_critic, episodes: int, greedy: bool, seed: int,
                  record: bool = False, progress: bool = True) -> dict[str, list]:
    """Play ``episodes`` complete evaluation episodes; returns ``returns``, ``lengths`` and, with ``record``,
    ``frames`` (one (T, H, W, 3) uint8 array per episode, the observations the agent saw)."""
    from drama.acting import ActingContext
    from drama.envs.runner import EnvRunner
    from drama.progress import ProgressBar
    from drama.visuals import to_frames

    runner = EnvRunner(replace(cfg.env, reseed="sequence"), seed, evaluation=True)
    acting = ActingContext(world_model, actor_critic, cfg.train.acting_context)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    out: dict[str, list] = {"returns": [], "lengths": [], "frames": []}
    try:
        with ProgressBar(episodes, enabled=progress, description="eval episodes", unit="episodes") as bar:
            for _ in range(episodes):
                observation, acting_done = runner.reset(), False
                acting.reset()
                total, length, frames = 0.0, 0, [observation] if record else []
                while not acting_done:
                    action = acting.act_and_observe(observation, runner.num_actions, greedy=greedy,
                                                    generator=generator)
                    result = runner.step(action)
                    total, length = total + result.reward, length + 1
                    observation, acting_done = result.observation, result.terminated or result.truncated
                    if record:
                        frames.append(observation)
                out["returns"].append(total)
                out["lengths"].append(length)
                if record and world_model.pixels:
                    out["frames"].append(to_frames(torch.stack(frames)))
                bar.update(len(out["returns"]), last_return=total)
    finally:
        runner.close()
    return out


def summarize(returns: list[float], env_id: str) -> dict[str, Any]:
    """Mean, std (population), median, min, max and the human-normalised score of the mean (Atari 100k games)."""
    from drama.scores import atari_game, human_normalized_score

    game = atari_game(env_id)
    mean = statistics.fmean(returns)
    return {
        "game": game, "mean": mean, "std": statistics.pstdev(returns), "median": statistics.median(returns),
        "min": min(returns), "max": max(returns),
        "human_normalized": None if game is None else human_normalized_score(game, mean),
    }


def evaluate(run_dir: str | Path, episodes: int = 10, greedy: bool = True, seed: int | None = None,
             checkpoint: str | Path | None = None, video: bool = False, device: str | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate a run's checkpoint; writes the result JSON (and GIFs with ``video``) and logs them to MLflow."""
    run_dir = Path(run_dir)
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} is invalid: must be a positive integer")
    if seed is not None and not 0 <= seed <= SEED_MAX - episodes + 1:
        raise ConfigError(f"--seed={seed} is invalid: must be in [0, {SEED_MAX - episodes + 1}] (episode k resets "
                          "with seed S + k)")
    check_evaluation(RunFolder(run_dir), device)
    start = time.perf_counter()
    try:
        agent = load_agent(run_dir, None if checkpoint is None else Path(checkpoint), device)
    except RuntimeError as exc:  # load_state_dict: the checkpoint's tensors do not fit the run's config.yaml
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if not lines or "state_dict" not in lines[0]:
            raise
        raise ConfigError(f"the checkpoint does not fit {RunFolder(run_dir).config} ({lines[0].rstrip(':')}: "
                          f"{lines[1][:160] if len(lines) > 1 else 'mismatch'})") from None
    cfg, world_model, actor_critic, step, ckpt = (agent.cfg, agent.world_model, agent.actor_critic, agent.step,
                                                  agent.checkpoint)
    seed = cfg.runtime.seed if seed is None else seed
    played = play_episodes(cfg, world_model, actor_critic, episodes, greedy, seed, record=video, progress=progress)
    mode = "greedy" if greedy else "sample"
    result = {
        "run_dir": str(run_dir.resolve()), "env_id": cfg.env.id, "backbone": cfg.world_model.backbone.name,
        "checkpoint": str(ckpt.resolve()), "checkpoint_step": step, "episodes": episodes, "seed": seed,
        "policy": mode, "returns": played["returns"], "lengths": played["lengths"],
        **summarize(played["returns"], cfg.env.id),
        "protocol": protocol(cfg, greedy, seed), "seconds": round(time.perf_counter() - start, 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder = RunFolder(run_dir).evaluations
    folder.mkdir(exist_ok=True)
    stem = f"step{step:08d}-{mode}-seed{seed}-n{episodes}"
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(path)
    videos = []
    if video:
        from drama.visuals import write_gif

        videos = [write_gif(frames, RunFolder(run_dir).evaluation_videos / f"{stem}-episode{k}.gif")
                  for k, frames in enumerate(played["frames"])]
    result["videos"] = [str(v) for v in videos]
    _track(RunFolder(run_dir), result, path, videos)
    return result


def _track(folder: RunFolder, result: dict[str, Any], path: Path, videos: list[Path]) -> None:
    """Metrics ``eval/*`` at the checkpoint step, the JSON and the videos as artifacts, in the run's record."""
    from drama.tracking import Tracker

    tracker = Tracker.open(folder)
    if tracker is None:
        warnings.warn(f"{folder.info} is missing: the evaluation is not logged to MLflow", stacklevel=2)
        return
    mode = result["policy"]
    metrics = {f"eval/{mode}/return_mean": result["mean"], f"eval/{mode}/return_std": result["std"],
               f"eval/{mode}/episodes": result["episodes"]}
    if result["human_normalized"] is not None:
        metrics[f"eval/{mode}/human_normalized"] = result["human_normalized"]
    tracker.log_metrics(metrics, result["checkpoint_step"])
    for artifact in (path, *videos):
        tracker.log_artifact(artifact, folder.artifact_path(artifact))
