"""Command line: ``drama info|fit|evaluate|report|bench|sweep|config``, and ``drama --version``.

``--config`` takes a packaged config's name (``atari``, ``debug``, ``cartpole``; ``drama config list``) or a YAML
file (:func:`drama.config.find_config_file`).

* ``drama info --config FILE [key=value ...]``: resolved config; last line: parameter counts as JSON.
* ``drama fit --config FILE [key=value ...]``: train a new run; ``drama fit --resume RUN_DIR [key=value ...]``
  continues one from its last checkpoint. The last line printed is a JSON summary of the run.
* ``drama evaluate RUN_DIR [--episodes N] [--envs K] [--greedy|--sample] [--seed S] [--checkpoint FILE] [--video]``: N
  complete evaluation episodes (:mod:`drama.evaluate`); the last line printed is the result summary as JSON.
* ``drama report RUN_DIR|EVAL_JSON ... [--out DIR] [--baseline SCORES_JSON ...]``: per-game table, aggregates,
  figures and scores.json (:mod:`drama.report`);
  the last line printed is a JSON object of the written files.
* ``drama bench --config FILE [key=value ...] [--iterations N] [--warmup N] [--compare "k=v k=v" ...]
  [--threads N] [--out FILE]``: time the loop's phases at the config's shapes, variants interleaved
  (:mod:`drama.bench`); the last line printed is the result as JSON.
* ``drama config list`` / ``drama config show NAME``: the packaged configs' names and descriptions; one's text
  (:mod:`drama.packaged_configs`).
* ``drama sweep SWEEP.yaml [key=value ...] [--address ADDRESS] [--max-concurrent N] [--refresh SECONDS]
  [--dry-run]``: a grid of trials (fit, then evaluate) run as Ray tasks, resumable, with a live table of trials
  (:mod:`drama.sweep`); the last line printed is a JSON summary.

``key=value`` items may come before or after the options.

User errors (unknown keys, bad values, missing files, unknown envs) print one line ``drama: error: ...`` to
stderr and exit with code 2; a damaged or foreign checkpoint file does the same with exit code 5 (the exit codes:
:mod:`drama.errors`).
"""

from __future__ import annotations

import argparse
import json
import sys

from drama.config import SEED_MAX, ConfigError, load_config, to_yaml
from drama.errors import (
    EXIT_USAGE,
    EXIT_WRITE_REFUSED,
    WRITE_ERRNOS,
    CheckpointError,
    Diverged,
    RunStopped,
    write_refused,
)
from drama.version import __version__

ERROR_HEAD_CHARS, ERROR_TAIL_CHARS = 400, 200
"""An error line longer than their sum keeps its start (the key and the start of the value) and its end (what is
allowed), with the number of characters cut in between: a 10 MB value never becomes a 10 MB line."""


def cut(message: str) -> str:
    """``message`` on one line of at most about ``ERROR_HEAD_CHARS + ERROR_TAIL_CHARS`` characters."""
    message = " ".join(message.splitlines())
    if len(message) <= ERROR_HEAD_CHARS + ERROR_TAIL_CHARS + 40:
        return message
    cut_chars = len(message) - ERROR_HEAD_CHARS - ERROR_TAIL_CHARS
    return f"{message[:ERROR_HEAD_CHARS]} ... [{cut_chars:,} characters cut] ... {message[-ERROR_TAIL_CHARS:]}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + message otherwise)
        raise ConfigError(message)


CONFIG_HELP = "a packaged config's name (drama config list), e.g. atari, or a YAML file"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="drama", description="DRAMA: Mamba-2 world-model reinforcement learning.")
    parser.add_argument("--version", action="version", version=f"drama {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    info = sub.add_parser("info", help="print the resolved config and the parameter counts (JSON, last line)")
    info.add_argument("--config", required=True, help=CONFIG_HELP)
    info.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    fit = sub.add_parser("fit", help="train a new run (--config) or continue one (--resume RUN_DIR)")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help=CONFIG_HELP)
    source.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    fit.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    evaluate = sub.add_parser("evaluate", help="play N complete evaluation episodes of a run's checkpoint")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by drama fit")
    evaluate.add_argument("--episodes", type=int, default=10, help="complete episodes to play (default 10)")
    policy = evaluate.add_mutually_exclusive_group()
    policy.add_argument("--greedy", dest="greedy", action="store_true", default=True,
                        help="argmax actions (default)")
    policy.add_argument("--sample", dest="greedy", action="store_false", help="actions sampled from the policy")
    evaluate.add_argument("--seed", type=int, default=None, help="episode k resets with seed S+k (default: run seed)")
    evaluate.add_argument("--checkpoint", default=None, help="checkpoint file (default: the run's last checkpoint)")
    evaluate.add_argument("--envs", type=int, default=None, metavar="K",
                          help="environments stepped together, one batched acting forward (default min(N, 16))")
    evaluate.add_argument("--video", action="store_true", help="record every episode as a GIF (MLflow artifact)")
    evaluate.add_argument("--device", default=None, help="torch device (default: the run's runtime.device)")
    evaluate.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    report = sub.add_parser("report", help="aggregate evaluations of runs: Markdown and CSV tables, PNG figures")
    report.add_argument("inputs", nargs="+", metavar="RUN_DIR|EVAL_JSON",
                        help="run directories (their latest evaluation) or evaluation JSON files")
    report.add_argument("--out", default="reports", help="output folder (default ./reports)")
    report.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    report.add_argument("--baseline", action="append", default=[], metavar="SCORES_JSON",
                        help="a scores.json (written by drama report) whose methods join as baselines; repeatable")
    bench = sub.add_parser("bench", help="time the loop's phases at a config's shapes; variants side by side (JSON)")
    bench.add_argument("--config", required=True, help=CONFIG_HELP)
    bench.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every variant")
    bench.add_argument("--iterations", type=int, default=3, help="timed loop iterations per variant (default 3)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant first (default 1)")
    bench.add_argument("--compare", action="append", default=[], metavar='"k=v k=v"',
                       help="a variant: overrides on top of the config (repeatable); the config alone is first")
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    bench.add_argument("--out", default=None, help="also write the JSON (indented) to this file")
    bench.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines on stderr")
    config = sub.add_parser("config", help="the packaged configs: list them, or print one to copy and edit")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    config_sub.add_parser("list", help="the packaged configs' names and one-line descriptions")
    show = config_sub.add_parser("show", help="print a packaged config (drama config show atari > my.yaml)")
    show.add_argument("name", help="a name from drama config list")
    sweep = sub.add_parser("sweep", help="run a grid of trials (fit + evaluate) with Ray; resumable; report at the end")
    sweep.add_argument("sweep_file", metavar="SWEEP.yaml",
                       help="a packaged sweep's name (sweeps/tiny, drama config list) or a sweep file")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every trial")
    sweep.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    sweep.add_argument("--max-concurrent", type=int, default=None, help="trials running at once (default: as many "
                       "as the resources allow)")
    sweep.add_argument("--dry-run", action="store_true", help="list the trials; start nothing, write nothing")
    sweep.add_argument("--refresh", type=float, default=10.0, metavar="SECONDS",
                       help="seconds between progress updates of the trials' table (default 10)")
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    from drama import packaged_configs

    if args.config_command == "list":
        names = packaged_configs.names()
        width = max(len(name) for name in names)
        for name in names:
            print(f"{name:<{width}}  {packaged_configs.description(name)}")
        return 0
    path = packaged_configs.path(args.name)
    if path is None:
        raise ConfigError(f"no packaged config {args.name!r}: the names are {', '.join(packaged_configs.names())}")
    sys.stdout.write(path.read_text())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from drama.sweep import dry_run, load_sweep, run_sweep

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent={args.max_concurrent} is invalid: must be a positive integer")
    if not 0 < args.refresh < float("inf"):
        raise ConfigError(f"--refresh={args.refresh} is invalid: must be a positive number of seconds")
    sweep = load_sweep(args.sweep_file, args.overrides)
    if args.dry_run:
        dry_run(sweep)
        return 0
    summary = run_sweep(sweep, address=args.address, max_concurrent=args.max_concurrent, refresh=args.refresh)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from drama.bench import bench, write_result

    result = bench(args.config, args.overrides, args.compare, iterations=args.iterations, warmup=args.warmup,
                   threads=args.threads, progress=args.progress)
    write_result(result, args.out)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    if not args.resume:
        load_config(args.config, args.overrides)  # a typo is answered before the heavy imports below (torch, ...)
    from drama.fit import fit_command

    try:
        result = fit_command(args.config, args.overrides, resume=args.resume)
    except RunStopped as stop:  # the summary of what was saved on stdout, then main's one line on stderr
        if stop.result is not None:
            print(json.dumps(stop.result.summary()), flush=True)
        raise
    print(json.dumps(result.summary()))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from drama.build import build_models
    from drama.envs.factory import probe_env
    from drama.preflight import check_backbone, check_model_shapes
    from drama.summary import parameter_counts

    spec = probe_env(cfg.env)
    check_model_shapes(cfg, spec.obs_shape)
    check_backbone(cfg)
    world_model, actor_critic = build_models(cfg, spec)
    print(to_yaml(cfg), end="")
    print(f"# env {cfg.env.id}: observation {list(spec.obs_shape)}, {spec.num_actions} actions")
    print(json.dumps(parameter_counts(world_model, actor_critic)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from drama.evaluate import evaluate

    result = evaluate(args.run_dir, episodes=args.episodes, greedy=args.greedy, seed=args.seed,
                      checkpoint=args.checkpoint, video=args.video, device=args.device, progress=args.progress,
                      envs=args.envs)
    keys = ("path", "env_id", "checkpoint_step", "episodes", "envs", "policy", "mean", "std", "human_normalized",
            "videos")
    print(json.dumps({key: result[key] for key in keys}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from drama.preflight import check_report
    from drama.report import report

    if args.reps < 1:
        raise ConfigError(f"--reps={args.reps} is invalid: must be a positive integer")
    if not 0 <= args.seed <= SEED_MAX:
        raise ConfigError(f"--seed={args.seed} is invalid: must be in [0, {SEED_MAX}]")
    check_report(args.inputs, args.out)
    print(json.dumps(report(args.inputs, out=args.out, reps=args.reps, seed=args.seed,
                            baselines_files=args.baseline)))
    return 0


COMMANDS = {"info": cmd_info, "fit": cmd_fit, "evaluate": cmd_evaluate, "report": cmd_report, "bench": cmd_bench,
            "sweep": cmd_sweep, "config": cmd_config}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; ``key=value`` items may come before or after the options (``drama sweep S.yaml --dry-run
    seed=1`` as well as ``drama sweep S.yaml seed=1 --dry-run``)."""
    args, extra = build_parser().parse_known_args(argv)
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            args = parse(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"drama: error: {cut(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as exc:
        print(f"drama: {exc}", file=sys.stderr)
        return exc.exit_code
    except Diverged as exc:
        print(f"drama: diverged: {exc}", file=sys.stderr)
        return exc.exit_code
    except CheckpointError as exc:  # a damaged or foreign file, not a usage error (a missing one is a ConfigError)
        print(f"drama: error: {cut(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(f"drama: error: {cut(write_refused(exc))}", file=sys.stderr)
        return EXIT_WRITE_REFUSED


if __name__ == "__main__":
    sys.exit(main())
