"""Can a world model learn a run's game? Train a fresh one on the run's replay and watch what it learns.

    python benchmarks/world_model_probe.py RUN_DIR --updates 1500 --every 250 [--set KEY=VALUE ...]
        [--threads 1] [--holdout 4000] [--seed 0] [--linear-decoder-output] [--trained]
        [--device cpu] [--time-limit S] [--out FILE]
    python benchmarks/world_model_probe.py --config laptop --random-rows 20000 --set env.id=ALE/Krull-v5 ...

Builds the world model of ``RUN_DIR``'s config (plus ``--set`` overrides, e.g. ``world_model.encoder.depth=16``),
trains it with its own optimiser and the run's precision on windows of ``train.batch_size`` x
``train.batch_length`` rows drawn uniformly from the run's final replay, all but the last ``--holdout`` rows, and
every ``--every`` updates measures it on 64 fixed windows of the held-out rows (other episodes than the training
rows, mostly):

* ``reward_loss`` (the two-hot loss), ``reward_auc`` (how often a rewarded row gets a larger predicted reward than
  an unrewarded one: 0.5 is chance) and ``reward_correlation`` over all rows, from ``h_t`` of the posterior rollout;
* ``kl``: the mean KL between posterior and prior (nats per latent; how much the frames tell beyond the
  prediction: a world model that ignores the moving objects sits near the free-bits floor);
* ``reconstruction``: summed squared error per frame, and ``foreground``: the mean squared error on the pixels
  that differ from their window's temporal median by more than 0.1 (the moving sprites), against
  ``foreground_zero``, the error of drawing the median there;
* ``open_loop``: on 256 held-out windows of ``imagination.context_length + imagination.horizon`` rows, the prior
  imagining the horizon under the real actions after the real context: imagined against real reward sums
  (:func:`diagnose_run.open_loop_rewards`), what imagination -- and so the actor -- sees of the game's rewards
  (null when the held-out rows hold no such window);
* ``window_information`` (nats the posterior tells apart between the rows of one window, :func:`window_information`)
  and ``reconstruction_vs_window_mean``: the reconstruction's summed squared error over that of drawing each
  window's mean frame (1: the model draws the scene, not what changes in it).

``--linear-decoder-output`` is an experiment, not a drama setting: the decoder's final sigmoid (the reference's) is
replaced by the identity, to see whether its saturation on the mostly black frames (the gradient at a pixel that a
small sprite lights now and then is scaled by sigma' ~ the pixel's mean) is what keeps the sprites out of the model.

``--trained`` starts from the run's own world model (its checkpoint) instead of a fresh one and measures it before
the first update (``--updates 0``: only that). The run trained on its whole replay, the "held-out" rows included,
so this says what the run's model reconstructs, not how it generalises; the same numbers as the fresh probes'.

``--config NAME --random-rows N`` (instead of ``RUN_DIR``): the replay is ``N`` rows of uniformly random play in the
config's env, collected with the training env stack (``runtime.seed``) before the probe: every variant of one game
sees the same rows. Random play reaches fewer of a game's scenes than a learning agent but shows the same sprites;
it needs no run, so a probe can run where no run folder is (the GPU machine). ``--device cuda`` trains there
(precision ``auto`` resolves for that device); ``--time-limit`` stops after that many seconds of updates, with the
last point measured.

Separates "the world model cannot represent this game" from "the agent has not trained long enough" without a
multi-hour learning run; compares settings at equal updates (``seconds_per_update`` says what each costs). Used
for the laptop preset's diagnosis (docs/decisions.md); not a CI test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


@torch.no_grad()
def measure(world_model, batch, open_loop_batch, context: int, horizon: int) -> dict:
    from diagnose_run import auc, correlation, open_loop_rewards, open_loop_summary

    with world_model.evaluating(), world_model.autocast():
        losses = world_model.compute_losses(batch)
        z, logits = world_model.sample_posterior(batch["observation"], max_frames=1024)
        h, _ = world_model.hidden_states(z, batch["action"])
        predicted = world_model.predict_reward(h).float().flatten()
        recon = world_model.decode(z).float()
        open_loop = None
        if open_loop_batch is not None:  # held-out rows hold a whole context + horizon window
            z_open, _ = world_model.sample_posterior(open_loop_batch["observation"], max_frames=1024)
            open_loop = open_loop_summary(*open_loop_rewards(world_model, z_open, open_loop_batch["action"],
                                                             open_loop_batch["reward"], context, horizon)[1:])
    obs = world_model.preprocess(batch["observation"]).float()
    median = obs.median(dim=1, keepdim=True).values
    foreground = ((obs - median).abs() > 0.1).any(dim=2, keepdim=True).expand_as(obs)
    reward = batch["reward"].flatten()
    frame_error = (recon - obs).pow(2).flatten(2).sum(-1)  # (B, L): summed squared error of each frame
    window_mean_error = (obs.mean(dim=1, keepdim=True) - obs).pow(2).flatten(2).sum(-1)
    return {
        "reward_loss": float(losses["loss/reward"]),
        "reward_auc": auc(predicted, reward != 0),
        "reward_correlation": correlation(predicted, reward),
        "kl": float(losses["kl/dynamics"]),
        "reconstruction": float(losses["loss/reconstruction"]),
        "foreground": float((recon - obs).pow(2)[foreground].mean()) if foreground.any() else None,
        "foreground_zero": float((median.expand_as(obs) - obs).pow(2)[foreground].mean()) if foreground.any() else None,
        "foreground_fraction": float(foreground.float().mean()),
        "window_information": window_information(logits.float()),
        "reconstruction_vs_window_mean": float(frame_error.mean() / window_mean_error.mean()),
        "open_loop": open_loop,
    }


def window_information(logits: torch.Tensor) -> float:
    """What the posterior tells apart inside a window, in nats: the mutual information between a window's rows
    and their latent, ``H(mean_t q_t) - mean_t H(q_t)`` per latent variable, summed over the variables and
    averaged over the (B, L, K, C) windows. Near 0 when every row of a window gets the same code (a model that
    knows which scene it is in but nothing that moves in it); Boxing's trained model: 28 nats. ``logits`` are the
    posterior head's, the unimix already in them."""
    probs = logits.softmax(-1)
    entropy = -(probs * probs.log()).sum(-1)  # (B, L, K)
    marginal = probs.mean(dim=1)
    marginal_entropy = -(marginal * marginal.log()).sum(-1)  # (B, K)
    return float((marginal_entropy - entropy.mean(dim=1)).sum(-1).mean())


def random_replay(cfg, rows: int):
    """``rows`` replay rows (the storage's keys, :mod:`drama.data.replay`) of uniformly random play in ``cfg.env``,
    through the env stack training uses, seeded with ``cfg.runtime.seed``."""
    from drama.envs.runner import EnvRunner

    runner = EnvRunner(cfg.env, cfg.runtime.seed)
    rng = torch.Generator().manual_seed(cfg.runtime.seed)
    out, began = [], time.perf_counter()
    runner.reset()
    for _ in range(rows):
        result = runner.step(int(torch.randint(runner.spec.num_actions, (1,), generator=rng)))
        out.append(result.replay_row())
        if result.episode_end:
            runner.reset()
    data = torch.cat(out)
    print(f"random_replay: {rows} rows of {cfg.env.id} in {time.perf_counter() - began:.0f} s", file=sys.stderr,
          flush=True)
    return data


def probe(run_dir: Path | None, updates: int, every: int, overrides: list[str], holdout: int, seed: int,
          out: Path | None = None, linear_decoder_output: bool = False, eval_length: int | None = None,
          trained: bool = False, device: str = "cpu",
          config: str | None = None, random_rows: int = 0, time_limit: float | None = None) -> dict:
    """The result (module docstring); with ``out``, also rewritten there after every measured point, so a probe
    stopped by hand keeps its curve."""
    from diagnose_run import replay_windows, valid_starts  # benchmarks/ is on sys.path when run as a script

    from drama.build import build_models
    from drama.checkpoint import read_checkpoint
    from drama.config import load_config
    from drama.device import AutocastRuntime, resolve_device, resolve_precision
    from drama.envs import probe_env
    from drama.run import RunFolder

    settings = [f"runtime.device={device}", *overrides]
    folder = None if run_dir is None else RunFolder(run_dir)
    cfg = load_config(config, settings) if folder is None else folder.read_config(settings)
    resolved = resolve_device(cfg.runtime.device)
    precision = resolve_precision(cfg.runtime.precision, resolved)
    torch.manual_seed(seed)
    world_model, _ = build_models(cfg, probe_env(cfg.env), AutocastRuntime(resolved, precision))
    world_model.to(resolved)
    if linear_decoder_output:
        assert isinstance(world_model.decoder.net[-1], torch.nn.Sigmoid)
        world_model.decoder.net[-1] = torch.nn.Identity()
    if folder is None:
        data = random_replay(cfg, random_rows)
        rows = random_rows
    else:
        state = read_checkpoint(folder.checkpoint)
        if trained:
            world_model.load_state_dict(state["world_model"])
        storage = state["replay"]["_storage"]
        rows, data = int(storage["_len"]), storage["_storage"]
    world_model.configure_optimizers()
    ends = data["episode_end"].reshape(-1)
    length, batch_size = cfg.train.batch_length, cfg.train.batch_size
    train_starts = valid_starts(ends, rows - holdout, length)
    eval_length = eval_length or length  # the same held-out windows for two batch shapes: the same --eval-length
    eval_starts = valid_starts(ends, rows, eval_length)
    eval_starts = eval_starts[eval_starts >= rows - holdout]
    generator = torch.Generator().manual_seed(seed)
    eval_batch = replay_windows(data, eval_starts[torch.randint(len(eval_starts), (64,), generator=generator)],
                                eval_length).to(resolved)
    context, horizon = cfg.imagination.context_length, cfg.imagination.horizon
    open_starts = valid_starts(ends, rows, context + horizon)
    open_starts = open_starts[open_starts >= rows - holdout]
    open_loop_batch = None if not len(open_starts) else replay_windows(
        data, open_starts[torch.randint(len(open_starts), (256,), generator=generator)], context + horizon).to(resolved)
    curve, spent = [], 0.0
    result = {"benchmark": "world_model_probe", "run_dir": None if run_dir is None else str(run_dir),
              "config": config, "replay": "random play" if folder is None else "the run's final replay",
              "env": cfg.env.id, "overrides": overrides,
              "linear_decoder_output": linear_decoder_output,
              "trained": trained, "precision": precision, "device": str(resolved),
              "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else None,
              "threads": torch.get_num_threads(), "replay_rows": rows,
              "holdout_rows": holdout, "batch": [batch_size, length], "eval_length": eval_length, "updates": 0,
              "planned_updates": updates,
              "world_model_parameters": sum(p.numel() for p in world_model.parameters()), "curve": curve}
    if trained:
        curve.append({"update": 0, **measure(world_model, eval_batch, open_loop_batch, context, horizon)})
        print(curve[-1], file=sys.stderr, flush=True)
    for update in range(1, updates + 1):
        starts = train_starts[torch.randint(len(train_starts), (batch_size,), generator=generator)]
        batch = replay_windows(data, starts, length).to(resolved)
        began = time.perf_counter()
        world_model.training_step(batch)
        world_model.lr_warmup.step()
        if resolved.type == "cuda":
            torch.cuda.synchronize(resolved)
        spent += time.perf_counter() - began
        stop = time_limit is not None and spent >= time_limit
        if update % every == 0 or update == updates or stop:
            point = {"update": update, **measure(world_model, eval_batch, open_loop_batch, context, horizon)}
            curve.append(point)
            result.update(updates=update, seconds_per_update=spent / update)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}, file=sys.stderr,
                  flush=True)
            if out is not None:
                out.write_text(json.dumps(result, indent=1) + "\n")
        if stop:
            break
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, nargs="?", help="a drama run folder (or --config with --random-rows)")
    parser.add_argument("--config", default=None, help="config name or file, with --random-rows instead of RUN_DIR")
    parser.add_argument("--random-rows", type=int, default=0, help="rows of random play to train on (no RUN_DIR)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds of updates")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--holdout", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--linear-decoder-output", action="store_true")
    parser.add_argument("--eval-length", type=int, default=None,
                        help="rows per held-out window (default train.batch_length)")
    parser.add_argument("--trained", action="store_true", help="start from the run's trained world model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if (args.run_dir is None) == (args.config is None) or (args.config is not None) != (args.random_rows > 0):
        parser.error("give RUN_DIR, or --config with --random-rows N")
    if args.trained and args.run_dir is None:
        parser.error("--trained needs RUN_DIR (its checkpoint)")
    torch.set_num_threads(args.threads)
    result = probe(args.run_dir, args.updates, args.every, args.overrides, args.holdout, args.seed, args.out,
                   args.linear_decoder_output, args.eval_length, args.trained,
                   args.device, args.config, args.random_rows, args.time_limit)
    from drama.bench import write_result

    write_result(result, None if args.out is None else str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
