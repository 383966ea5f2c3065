"""``drama evaluate``: exactly N complete episodes of a trained agent under the evaluation protocol.

Protocol (docs/decisions.md, "Evaluation protocol"; the reference's evaluation defects it fixes are listed there):

* the training env stack of the run (same action repeat, max-pool, resize, no sticky actions, no-op setting,
  time limit) **without the life-loss signal**; ``--envs K`` environments stepped together with one batched
  acting forward per step (default ``min(N, 16)``); exactly N episodes, each played to its end (terminated or time
  limit), an env that finishes taking the next unplayed episode, so short episodes are not favoured;
* episode ``k`` resets with seed ``S + k`` (``--seed S``, default: the run's seed) and draws its randomness (random
  first action, posterior, prior and policy samples) from its own generator seeded from ``(S, k)``, so the
  episodes and their returns do not depend on K (up to the rounding of batched kernels);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drama.build import load_agent
from drama.config import SEED_MAX, ConfigError, DramaConfig
from drama.preflight import check_evaluation
from drama.run import RunFolder


def protocol(cfg: DramaConfig, greedy: bool, seed: int, envs: int = 1) -> dict[str, Any]:
    """The evaluation protocol as data (stored with every result)."""
    return {
        "env_id": cfg.env.id, "action_repeat": cfg.env.action_repeat, "noop_max": cfg.env.noop_max,
        "sticky_actions": 0.0, "full_action_space": False, "life_loss_signal": False,
        "max_episode_frames": cfg.env.max_episode_frames, "episode_seeds": f"{seed} + k",
        "policy": "greedy" if greedy else "sample", "acting_context": cfg.train.acting_context,
        "acting_window_reset": "at every episode start", "first_action": "random (empty acting window)",
        "episodes": "exactly N complete episodes, k = 0..N-1, each to its end (no short-episode bias); an env "
                    "that finishes takes the next unplayed k",
        "envs": envs, "episode_randomness": "per episode: a generator seeded from (S, k)",
        "normalisation": "unrounded random/human scores (drama.scores)",
    }


DEFAULT_ENVS = 16
"""Environments stepped together by default (fewer when fewer episodes are asked for)."""


def episode_generator(seed: int, episode: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Episode ``episode``'s own RNG (its random first action and every sample of its acting steps), seeded from
    ``(seed, episode)``: the same whichever env plays the episode and whatever else shares the batch."""
    state = np.random.SeedSequence([seed, episode]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


@dataclass
class _Episode:
    """The episode an env is playing."""

    index: int
    seed: int
    generator: torch.Generator
    observation: torch.Tensor
    total: float = 0.0
    length: int = 0
    frames: list = field(default_factory=list)


@torch.no_grad()
def play_episodes(cfg: DramaConfig, world_model, actor_critic, episodes: int, greedy: bool, seed: int,
                  record: bool = False, progress: bool = True, envs: int = 1) -> dict[str, list]:
    """Play exactly ``episodes`` complete evaluation episodes on ``envs`` environments stepped together (one
    batched acting forward per step); episode k resets with seed ``seed + k`` and draws its randomness from
    :func:`episode_generator`, and an env that finishes takes the next unplayed episode. Returns ``returns``,
    ``lengths`` and the reset ``seeds`` in episode order and, with ``record``, ``frames`` (one (T, H, W, 3)
    uint8 array per episode, the observations the agent saw)."""
    from drama.acting import Acting
    from drama.envs.runner import EnvRunner
    from drama.progress import ProgressBar
    from drama.visuals import to_frames

    envs = max(1, min(envs, episodes))
    device = world_model.device
    runners = [EnvRunner(cfg.env, seed, evaluation=True) for _ in range(envs)]
    acting = Acting(world_model, actor_critic, cfg.train.acting_context, envs=envs)
    torch.manual_seed(seed)
    results: dict[int, tuple[float, int, list]] = {}
    playing: list[_Episode | None] = [None] * envs
    next_episode = 0

    def start(env: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            playing[env] = None
            return
        k, next_episode = next_episode, next_episode + 1
        observation = runners[env].reset_with_seed(seed + k)
        acting.reset(env)
        playing[env] = _Episode(k, seed + k, episode_generator(seed, k, device), observation,
                                frames=[observation] * record)

    try:
        with ProgressBar(episodes, enabled=progress, description="eval episodes", unit="episodes") as bar:
            for env in range(envs):
                start(env)
            while any(playing):
                active = [env for env, episode in enumerate(playing) if episode is not None]
                now = [playing[env] for env in active]
                actions = acting.step(active, torch.stack([e.observation for e in now]), runners[0].num_actions,
                                      greedy=greedy, generators=[e.generator for e in now])
                for env, episode, action in zip(active, now, actions, strict=True):
                    result = runners[env].step(action)
                    episode.total, episode.length = episode.total + result.reward, episode.length + 1
                    episode.observation = result.observation
                    if record:
                        episode.frames.append(result.observation)
                    if result.terminated or result.truncated:
                        results[episode.index] = (episode.total, episode.length, episode.frames, episode.seed)
                        bar.update(len(results), last_return=episode.total)
                        start(env)
    finally:
        for runner in runners:
            runner.close()
    ordered = [results[k] for k in range(episodes)]
    return {"returns": [r[0] for r in ordered], "lengths": [r[1] for r in ordered], "seeds": [r[3] for r in ordered],
            "frames": [to_frames(torch.stack(r[2])) for r in ordered] if record and world_model.pixels else []}


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
             progress: bool = True, envs: int | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint on ``envs`` environments stepped together (default ``min(episodes, 16)``);
    writes the result JSON (and GIFs with ``video``) and logs them to MLflow."""
    run_dir = Path(run_dir)
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} is invalid: must be a positive integer")
    if envs is not None and envs < 1:
        raise ConfigError(f"--envs={envs} is invalid: must be a positive integer")
    envs = min(episodes, DEFAULT_ENVS if envs is None else envs)
    if seed is not None and not 0 <= seed <= SEED_MAX - episodes + 1:
        raise ConfigError(f"--seed={seed} is invalid: must be in [0, {SEED_MAX - episodes + 1}] (episode k resets "
                          "with seed S + k)")
    check_evaluation(RunFolder(run_dir), device)
    start = time.perf_counter()
    agent = load_agent(run_dir, None if checkpoint is None else Path(checkpoint), device)
    cfg, world_model, actor_critic, step, ckpt = (agent.cfg, agent.world_model, agent.actor_critic, agent.step,
                                                  agent.checkpoint)
    seed = cfg.runtime.seed if seed is None else seed
    played = play_episodes(cfg, world_model, actor_critic, episodes, greedy, seed, record=video, progress=progress,
                           envs=envs)
    mode = "greedy" if greedy else "sample"
    result = {
        "run_dir": str(run_dir.resolve()), "env_id": cfg.env.id, "backbone": cfg.world_model.backbone.name,
        "checkpoint": str(ckpt.resolve()), "checkpoint_step": step, "episodes": episodes, "seed": seed,
        "policy": mode, "returns": played["returns"], "lengths": played["lengths"], "episode_seeds": played["seeds"],
        **summarize(played["returns"], cfg.env.id),
        "envs": envs, "protocol": protocol(cfg, greedy, seed, envs), "seconds": round(time.perf_counter() - start, 2),
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
    from drama.metrics import eval_key
    from drama.tracking import Tracker

    tracker = Tracker.open(folder)
    if tracker is None:
        warnings.warn(f"{folder.info} is missing: the evaluation is not logged to MLflow", stacklevel=2)
        return
    names = {"return_mean": result["mean"], "return_std": result["std"], "episodes": result["episodes"],
             "human_normalized": result["human_normalized"]}
    metrics = {eval_key(result["policy"], name): value for name, value in names.items() if value is not None}
    tracker.log_metrics(metrics, result["checkpoint_step"])
    for artifact in (path, *videos):
        tracker.log_artifact(artifact, folder.artifact_path(artifact))
