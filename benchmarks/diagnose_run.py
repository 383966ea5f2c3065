"""What has a run learned? The world model and the policy of a run's checkpoint measured on its own replay.

    python benchmarks/diagnose_run.py RUN_DIR [--windows 128] [--seed 0] [--recent 4096] [--checkpoint FILE] \\
        [--out FILE]

Draws ``--windows`` real windows of ``imagination.context_length + imagination.horizon`` rows that stay inside one
episode (uniformly over the valid starts of the checkpoint's replay) and reports, as one JSON object:

* ``reconstruction``: mean squared error per pixel (the model's [-0.5, 0.5] scale) of the decoded posterior
  sample, against predicting the windows' mean frame;
* ``reward``: the reward head on the posterior rollout (``R(h_t)``, the reward of ``a_t``) against the real reward:
  mean absolute error (and that of always predicting 0), on rows with a non-zero reward the sign accuracy and the
  correlation, how often a rewarded row gets a larger prediction than an unrewarded one (``auc``; 0.5: chance) and
  the mean prediction on both kinds of rows;
* ``termination``: precision and recall of ``T(h_t) > 0`` against the real termination targets;
* ``open_loop``: the sequence model run over the first C real frames, then H imagined steps fed the **real**
  actions of the next H rows: the imagined reward sum against the real one (correlation, mean absolute error, and
  the error of predicting 0) -- whether imagination tracks reality under the actions that were taken;
* ``on_policy``: windows drawn from the **latest** ``--recent`` rows only (collected by nearly the checkpoint's
  policy): the actor's own imagined rollouts from the C real frames (``imagine`` with the sampled policy, as in
  training) against the real reward sums of the next H rows, next to the open loop under the real actions on the
  same windows. If the world model is right about the policy, the actor's imagined sums match the real ones on
  average; an imagined mean well above the real one, with the open loop close to it, is model exploitation;
* ``policy``: on the acting features ``[ẑ_t, h_{t-1}]`` of the real windows, the mean entropy (and the uniform
  entropy), the mean probability of the most likely action and the histogram of greedy actions;
* ``metrics``: the latest logged training metrics that matter here (return scale, entropy, DFS counters).

Used to find out why a run does or does not learn (benchmarks/learning_atari.py); not a CI test.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch


def correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two 1-D tensors (None when either is constant or too short)."""
    if a.numel() < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def auc(score: torch.Tensor, positive: torch.Tensor) -> float | None:
    """How often a positive row scores above a negative one (ROC AUC: 0.5 is chance; ties broken arbitrarily)."""
    pos, neg = score[positive].double(), score[~positive].double()
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    ranks = torch.cat([pos, neg]).argsort().argsort().double() + 1
    return float((ranks[: pos.numel()].sum() - pos.numel() * (pos.numel() + 1) / 2) / (pos.numel() * neg.numel()))


def valid_starts(episode_end: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """Starts s with rows s..s+length-1 inside the filled buffer and no episode end before the last row."""
    ends = episode_end[:rows].long()
    before = torch.cat([torch.zeros(1, dtype=torch.long), ends.cumsum(0)])
    starts = torch.arange(0, rows - length + 1)
    return starts[(before[starts + length - 1] - before[starts]) == 0]


def replay_windows(data, starts: torch.Tensor, length: int):
    """The (len(starts), length) world-model batch (a TensorDict) of the replay storage ``data`` from rows
    ``starts``: uint8 observations, int64 actions, float rewards and termination targets."""
    from tensordict import TensorDict

    index = starts[:, None] + torch.arange(length)
    batch = {key: data[key][index] for key in ("observation", "action", "reward", "termination")}
    batch["action"] = batch["action"].reshape(index.shape).long()
    batch["reward"] = batch["reward"].reshape(index.shape).float()
    batch["termination"] = batch["termination"].reshape(index.shape).float()
    return TensorDict(batch, batch_size=index.shape)


@torch.no_grad()
def open_loop_rewards(world_model, z, action, reward, context: int, horizon: int):
    """The sequence model over the first ``context`` posterior latents ``z`` (B, C+H, K*C) and their actions, then
    ``horizon`` steps imagined from the prior fed the **real** actions of the next rows. Returns the context's
    hidden states and the imagined and real reward sums over the horizon, each (B,)."""
    h_context, backbone_state = world_model.hidden_states(z[:, :context], action[:, :context])
    z_hat = world_model.sample_prior(h_context[:, -1].float())
    imagined = []
    for j in range(horizon):
        h_j, backbone_state = world_model.dynamics.step(world_model.embed(z_hat, action[:, context + j]),
                                                        backbone_state)
        h_j = h_j.float()
        imagined.append(world_model.predict_reward(h_j).float())
        z_hat = world_model.sample_prior(h_j)
    return h_context, torch.stack(imagined, 1).sum(1), reward[:, context:context + horizon].float().sum(1)


@torch.no_grad()
def on_policy_rewards(world_model, actor_critic, batch, context: int, horizon: int) -> dict:
    """The actor imagining ``horizon`` steps from the first ``context`` real frames of ``batch`` (sampled actions, as
    in training) against the real reward sums of the next ``horizon`` rows, and the open loop under the real actions
    on the same windows: means, correlations and the imagined-minus-real bias of each."""
    from drama.imagination import imagine

    rollout = imagine(world_model, batch[:, :context], actor_critic.act, horizon)
    actor_sum = rollout["reward"].float().sum(1)
    z, _ = world_model.sample_posterior(batch["observation"], max_frames=1024)
    _, open_sum, real_sum = open_loop_rewards(world_model, z, batch["action"], batch["reward"], context, horizon)
    actions = actor_critic.num_actions
    return {"windows": int(real_sum.numel()), "real_sum_mean": float(real_sum.mean()),
            "actor_imagined_sum_mean": float(actor_sum.mean()), "actor_bias": float((actor_sum - real_sum).mean()),
            "actor_correlation": correlation(actor_sum, real_sum),
            "open_loop_imagined_sum_mean": float(open_sum.mean()),
            "open_loop_bias": float((open_sum - real_sum).mean()),
            "open_loop_correlation": correlation(open_sum, real_sum),
            "imagined_actions": torch.bincount(rollout["action"].flatten(), minlength=actions).tolist(),
            "real_actions": torch.bincount(batch["action"][:, context:].flatten(), minlength=actions).tolist()}


def open_loop_summary(imagined_sum: torch.Tensor, real_sum: torch.Tensor) -> dict:
    """Imagined against real reward sums: correlation, mean absolute error (and that of predicting 0), means."""
    return {"correlation": correlation(imagined_sum, real_sum),
            "mae": float((imagined_sum - real_sum).abs().mean()), "zero_mae": float(real_sum.abs().mean()),
            "real_sum_mean": float(real_sum.mean()), "imagined_sum_mean": float(imagined_sum.mean())}


@torch.no_grad()
def diagnose(run_dir: Path, windows: int, seed: int, checkpoint: Path | None, recent: int = 4096) -> dict:
    from drama.build import build_models
    from drama.checkpoint import read_checkpoint
    from drama.envs import probe_env
    from drama.run import CHECKPOINT_FILE, RunFolder
    from drama.tracking import Tracker

    folder = RunFolder(run_dir)
    cfg = folder.read_config(["runtime.device=cpu"])
    state = read_checkpoint(checkpoint or folder.checkpoint)
    world_model, actor_critic = build_models(cfg, probe_env(cfg.env))
    world_model.load_state_dict(state["world_model"])
    actor_critic.load_state_dict(state["actor_critic"])
    world_model.eval()
    actor_critic.eval()
    storage = state["replay"]["_storage"]
    rows = int(storage["_len"])
    data = storage["_storage"]
    C, H = cfg.imagination.context_length, cfg.imagination.horizon
    starts = valid_starts(data["episode_end"].reshape(-1), rows, C + H)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    chosen = starts[torch.randint(len(starts), (min(windows, len(starts)),), generator=generator)]
    batch = replay_windows(data, chosen, C + H)
    obs, action, reward = batch["observation"], batch["action"], batch["reward"]
    termination = batch["termination"].bool()

    recent_starts = starts[starts >= rows - recent]
    on_policy = None
    if len(recent_starts):
        picked = recent_starts[torch.randint(len(recent_starts), (windows,), generator=generator)]
        on_policy = on_policy_rewards(world_model, actor_critic, replay_windows(data, picked, C + H), C, H)
        on_policy["recent_rows"] = recent

    # posterior rollout over the whole window
    z, _ = world_model.sample_posterior(obs, max_frames=1024)
    target = world_model.preprocess(obs.reshape(-1, *obs.shape[2:])).float()
    recon = world_model.decode(z).reshape(target.shape).float()
    mse = float((recon - target).pow(2).mean())
    mean_frame_mse = float((target - target.mean(0, keepdim=True)).pow(2).mean())
    h, _ = world_model.hidden_states(z, action)
    predicted_reward = world_model.predict_reward(h).float()
    predicted_termination = world_model.predict_termination(h)
    nonzero = reward != 0
    true_pos = (predicted_termination & termination).sum().item()

    h_context, imagined_sum, real_sum = open_loop_rewards(world_model, z, action, reward, C, H)

    # the policy on acting features [ẑ_t, h_{t-1}] at the last context step
    features = torch.cat([world_model.sample_prior(h_context[:, -2].float()), h_context[:, -2].float()], -1)
    logits = actor_critic.policy(features).float()
    probs = logits.softmax(-1)
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
    greedy = torch.bincount(logits.argmax(-1), minlength=logits.shape[-1])

    tracker = Tracker.open(folder)
    metrics = {}
    for key in ("actor_critic/return_scale", "actor_critic/entropy", "actor_critic/return_mean",
                "actor_critic/value_mean", "actor_critic/imagined_reward", "world_model/loss/reward",
                "world_model/loss/reconstruction", "replay/c_mean", "replay/c_max", "replay/m_mean",
                "replay/world_model/never_drawn", "replay/imagination/never_drawn",
                "replay/world_model/valid_starts"):
        steps, values = tracker.metric_history(key) if tracker is not None else ([], [])
        metrics[key] = values[-1] if values else None
    return {
        "run_dir": str(run_dir), "checkpoint": str(checkpoint or folder.root / CHECKPOINT_FILE),
        "env_step": int(state["loop"]["step"]), "replay_rows": rows, "windows": len(chosen),
        "window": f"{C} context + {H} horizon rows",
        "reconstruction": {"mse": mse, "mean_frame_mse": mean_frame_mse,
                           "explained": 1 - mse / mean_frame_mse if mean_frame_mse else None},
        "reward": {"mae": float((predicted_reward - reward).abs().mean()), "zero_mae": float(reward.abs().mean()),
                   "nonzero_rows": int(nonzero.sum()),
                   "nonzero_sign_accuracy": float((predicted_reward[nonzero].sign() == reward[nonzero].sign())
                                                  .float().mean()) if nonzero.any() else None,
                   "nonzero_correlation": correlation(predicted_reward[nonzero], reward[nonzero]),
                   "auc": auc(predicted_reward.flatten(), nonzero.flatten()),
                   "mean_predicted_on_rewarded_rows": float(predicted_reward[nonzero].mean()) if nonzero.any()
                   else None,
                   "mean_predicted_on_other_rows": float(predicted_reward[~nonzero].mean())},
        "termination": {"real": int(termination.sum()), "predicted": int(predicted_termination.sum()),
                        "precision": true_pos / max(1, int(predicted_termination.sum())),
                        "recall": true_pos / max(1, int(termination.sum()))},
        "open_loop": open_loop_summary(imagined_sum, real_sum),
        "on_policy": on_policy,
        "policy": {"entropy": entropy, "uniform_entropy": math.log(logits.shape[-1]),
                   "max_probability": float(probs.max(-1).values.mean()), "greedy_actions": greedy.tolist()},
        "metrics": metrics,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--windows", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--recent", type=int, default=4096,
                        help="rows at the end of the replay the on-policy windows are drawn from (default 4096)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = diagnose(args.run_dir, args.windows, args.seed, args.checkpoint, args.recent)
    from drama.bench import write_result

    write_result(result, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
