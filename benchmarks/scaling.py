"""Scaling benchmark: world-model update time and peak memory versus sequence length, per dynamics backbone.

Usage (from the repository root, after installing the package):

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
        python benchmarks/scaling.py [--backbones mamba2 mamba gru transformer] [--lengths 64 128 256 512 1024] \
            [--batch B] [--repeats 3] [--threads 1] [--device auto] [--out-dir benchmarks/results] \
            [--config conf/atari.yaml] [key=value ...]

The model is the paper's (``conf/atari.yaml``: hidden 512, 2 layers, Pong 3x64x64 frames, 6 actions) with
``world_model.backbone.name`` switched per backbone, in float32 (no autocast, as ``benchmarks/update_step.py``).
For every backbone and every sequence length L, at a fixed batch B (default 2 on CPU, 16 on CUDA):

* ``world_model_update``: one full world-model update at B x L (encoder, backbone, decoder, heads, world-model
  loss, backward, gradient clip, LaProp step: ``WorldModel.training_step``, exactly as in update_step.py);
* ``sequence_model``: forward + backward of the backbone alone on random input (B, L, D_in), D_in =
  latent + actions, with a gradient into the input as in the world model. At paper width the CNN
  encoder/decoder dominate the full update (their cost is linear in B*L frames), so this phase is the one that
  shows the backbone's own growth with L (linear for the SSMs and the GRU, quadratic attention for the
  transformer).

Each is one warm-up then ``--repeats`` timed runs; the median and the minimum are reported. Per backbone (it
does not depend on L) the script also measures imagination throughput of the backbone alone, in eval mode
under ``torch.no_grad()``: one parallel pass over ``--context`` random tokens, then ``--horizon`` ``step``
calls from that state, at batch ``--imagine-batch``; ``imagine_steps_per_s`` is step calls per second
(horizon / median time of the step loop) and ``imagine_tokens_per_s`` = batch x steps/s.

Peak memory, per measurement (``peak_mb``; ``peak_delta_mb`` = ``peak_mb - baseline_mb``):

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, over the warm-up and the timed
  runs; the baseline is ``memory_allocated`` once the model and its inputs are on the device. Measurements run
  one after another in this process (``--isolate auto`` = ``inline``).
* CPU: every measurement runs in a fresh process (``--isolate auto`` = ``process``), forked from a
  ``multiprocessing`` forkserver that has only imported the libraries, so that the resident-set peak belongs
  to that measurement alone. The baseline is the current RSS (``VmRSS``) once the model and its inputs are
  built; the peak is ``VmHWM`` reset to that baseline just before the warm-up (``/proc/self/clear_refs``;
  ``ru_maxrss`` where that is unavailable). ``peak_delta_mb`` is therefore what the warm-up and the timed
  runs added: activations, gradients, the optimizer state that LaProp allocates at its first step (full
  update only) and allocator slack. It is a process-level figure, not a tensor-level one: it includes the
  glibc heap's fragmentation and, with the allocator settings above (no trimming), memory freed and not
  reused. Read it as "how much more RAM this needs", comparable across backbones and lengths of one run;
  ``peak_mb`` also counts the interpreter, torch and the model (about 0.35-0.5 GB). The world-model update
  and the sequence model are measured in separate processes. With ``--isolate inline`` on CPU the peak would
  be the whole run's, so memory is reported as null.

Threads: on CPU the default is ONE torch thread (``--threads 0`` keeps torch's default, one per core). On a
shared 2-vCPU virtual machine with other work running, 2-thread runs were 3-40x slower than 1-thread runs and
not even monotone in L (a vCPU taken away by the host stalls every OpenMP barrier), while 1-thread times grew
smoothly; the default favours steady, comparable numbers over peak speed. On CUDA torch's default is kept.
The minimum of the repeats is reported next to the median.

Outputs: one JSON object per measurement on stdout as it finishes (progress goes to stderr), then
``{out_dir}/scaling_{device_type}.json`` (metadata, every measurement, a ``table`` of one row per (backbone, L),
the transformer/mamba2 ``ratios`` per L and the ``imagination`` rows), ``scaling_{device_type}.md`` (the same
tables in Markdown, also printed to stderr) and ``scaling_{device_type}.png`` (log-log plots of time and
memory versus L, one line per backbone, and a bar chart of imagination throughput). A backbone that cannot be
built (e.g. not implemented yet) gets one error entry per measurement and is skipped, and a length that fails
(e.g. out of memory) skips the longer lengths of that backbone and phase. No timing is asserted anywhere:
this script only measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch
from update_step import PONG, peak_rss_mb, timed, world_model_batch

from drama.config import load_config
from drama.device import device_name, resolve_device
from drama.nn.backbones import build_backbone

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("mamba2", "mamba", "gru", "transformer")
PHASES = ("sequence_model", "world_model_update", "imagination")
LENGTH_PHASES = ("world_model_update", "sequence_model")
MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


# ---------------------------------------------------------------------------------------------- one measurement
def job_config(job: dict):
    """The config of one measurement: the base file and overrides, then the backbone, B, L and imagination
    shape; the transformer's learned positions cover the longest sequence it reads."""
    length = job["length"] or job["base_batch_length"]
    longest = max(length, job["base_acting_context"], job["context"] + job["horizon"])
    return load_config(job["config"], [
        *job["overrides"], f"world_model.backbone.name={job['backbone']}", f"train.batch_size={job['batch']}",
        f"train.batch_length={length}", f"world_model.backbone.max_length={longest}",
        f"imagination.batch_size={job['imagine_batch']}", f"imagination.context_length={job['context']}",
        f"imagination.horizon={job['horizon']}"])


def _proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux) in MB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of what runs between :meth:`start` and :meth:`stop` (see the module docstring).

    CPU, isolated: the baseline is the current RSS; the peak is ``VmHWM`` after resetting it to the current RSS
    at :meth:`start` (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), else ``ru_maxrss`` (the process's
    peak so far; a fresh process has built only this measurement's model before it)."""

    def __init__(self, device: torch.device, isolated: bool) -> None:
        self.device, self.isolated = device, isolated
        self.metric = "cuda_max_memory_allocated" if device.type == "cuda" else "ru_maxrss"
        self.baseline = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            gc.collect()  # tensors in reference cycles of earlier measurements
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device) / 2**20
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.metric = "VmHWM"
        except OSError:
            pass
        rss = _proc_status_mb("VmRSS")
        self.baseline = peak_rss_mb() if rss is None else rss

    def stop(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif not self.isolated:
            return {"memory_metric": None, "baseline_mb": None, "peak_mb": None, "peak_delta_mb": None}
        else:
            peak = (_proc_status_mb("VmHWM") if self.metric == "VmHWM" else None) or peak_rss_mb()
        return {"memory_metric": self.metric, "baseline_mb": round(self.baseline, 1), "peak_mb": round(peak, 1),
                "peak_delta_mb": round(peak - self.baseline, 1)}


def _timing(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 5), "min_s": round(min(times), 5),
            "times_s": [round(t, 5) for t in times], "repeats": len(times)}


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(job: dict, device: torch.device):
    """The modules and inputs of one measurement, and the function to time."""
    cfg = job_config(job)
    torch.manual_seed(0)
    wm_cfg = cfg.world_model
    input_dim = wm_cfg.stoch_dim * wm_cfg.class_dim + PONG.num_actions
    if job["phase"] == "world_model_update":
        from drama.build import build_models

        world_model, actor_critic = build_models(cfg, PONG)
        del actor_critic
        world_model.to(device).configure_optimizers()
        batch = world_model_batch({"batch_size": job["batch"], "batch_length": job["length"]}, device)
        return {"world_model": world_model, "batch": batch}, lambda: world_model.training_step(batch)
    backbone = build_backbone(wm_cfg.backbone, input_dim, wm_cfg.hidden_dim).to(device)
    if job["phase"] == "sequence_model":
        backbone.train()
        x = torch.randn(job["batch"], job["length"], input_dim, device=device, requires_grad=True)

        def forward_backward():
            backbone.zero_grad(set_to_none=True)
            x.grad = None
            h, _ = backbone(x)
            h.square().mean().backward()

        return {"backbone": backbone, "x": x}, forward_backward
    backbone.eval()
    b = job["imagine_batch"]
    context = torch.randn(b, job["context"], input_dim, device=device)
    tokens = torch.randn(job["horizon"], b, input_dim, device=device)
    after_context = {}  # the state after the context, made by the (untimed, memory-measured) warm-up

    @torch.no_grad()
    def context_pass():
        backbone(context)

    @torch.no_grad()
    def step_loop():
        if "state" not in after_context:
            after_context["state"] = backbone(context)[1]
        s = after_context["state"]
        for token in tokens:
            _, s = backbone.step(token, s)

    return {"backbone": backbone, "context_pass": context_pass}, step_loop


def measure(job: dict) -> dict:
    """Run one measurement (``job["phase"]`` of ``job["backbone"]`` at ``job["length"]``) in this process and
    return its row; failures become a row with ``error`` and ``stage`` (build or measure)."""
    device = torch.device(job["device"])
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    row = {key: job[key] for key in ("backbone", "phase", "length", "batch")}
    if job["phase"] == "imagination":
        row.update(length=None, batch=job["imagine_batch"], context=job["context"], horizon=job["horizon"])
    row["device"] = str(device)
    start = time.perf_counter()
    stage = "build"
    try:
        modules, fn = _build(job, device)
        model = modules.get("world_model", modules.get("backbone"))
        row["parameters"] = _parameters(model)
        stage = "measure"
        memory = PeakMemory(device, job["isolated"])
        memory.start()
        times = timed(fn, job["repeats"], device)
        if job["phase"] == "imagination":
            context_times = timed(modules["context_pass"], job["repeats"], device)
        row.update(memory.stop())
    except Exception as exc:  # recorded, the benchmark goes on
        message = (str(exc).strip().splitlines() or [""])[0]
        row.update(error=f"{type(exc).__name__}: {message}", stage=stage)
        row["wall_s"] = round(time.perf_counter() - start, 2)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    row.update(_timing(times))
    if job["phase"] == "imagination":
        steps_s = statistics.median(times)
        row.update(context_median_s=round(statistics.median(context_times), 5),
                   imagine_steps_per_s=round(job["horizon"] / steps_s, 2),
                   imagine_tokens_per_s=round(job["imagine_batch"] * job["horizon"] / steps_s, 1))
    row["threads"] = torch.get_num_threads()
    row["wall_s"] = round(time.perf_counter() - start, 2)
    del modules, fn
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    return row


def measure_in_fresh_process(job: dict) -> dict:
    """:func:`measure` in a new process, so that its peak RSS is this measurement's alone.

    The process is forked from a ``forkserver`` that has only imported the libraries (never from this process,
    which may have run OpenMP code: libgomp hangs in such a child), or spawned where forkserver is missing."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["torch", "drama.config", "drama.build", "drama.nn.backbones"])
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(measure, job).result()
    except BrokenProcessPool as exc:  # killed (e.g. out of memory)
        row = {key: job[key] for key in ("backbone", "phase", "length", "batch")}
        row.update(device=job["device"], error=f"worker process died: {exc}", stage="worker")
        return row


# ---------------------------------------------------------------------------------------------- summary
def _get(rows: list[dict], backbone: str, phase: str, length: int | None) -> dict | None:
    for row in rows:
        if (row["backbone"], row["phase"], row["length"]) == (backbone, phase, length) and "error" not in row:
            return row
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize(rows: list[dict], backbones: list[str], lengths: list[int]) -> dict:
    """One table row per (backbone, L), the transformer/mamba2 ratios per L, and the imagination rows."""
    table = []
    for backbone in backbones:
        for length in lengths:
            entry = {"backbone": backbone, "length": length}
            for phase in LENGTH_PHASES:
                row = _get(rows, backbone, phase, length)
                for key in ("median_s", "min_s", "peak_mb", "peak_delta_mb"):
                    name = {"median_s": "s"}.get(key, key)
                    entry[f"{phase}_{name}"] = row.get(key) if row else None
            table.append(entry)
    ratios = []
    for length in lengths:
        num = next((e for e in table if e["backbone"] == "transformer" and e["length"] == length), None)
        den = next((e for e in table if e["backbone"] == "mamba2" and e["length"] == length), None)
        if num is None or den is None:
            continue
        entry = {"length": length}
        for phase in LENGTH_PHASES:
            for key in ("s", "min_s", "peak_mb", "peak_delta_mb"):
                entry[f"{phase}_{key}"] = _ratio(num[f"{phase}_{key}"], den[f"{phase}_{key}"])
        ratios.append(entry)
    imagination = [row for row in rows if row["phase"] == "imagination"]
    return {"table": table, "ratios": ratios, "imagination": imagination}


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _fmt_x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _fmt_t(entry: dict, phase: str) -> str:
    """``median (min)`` seconds."""
    median, low = entry.get(f"{phase}_s"), entry.get(f"{phase}_min_s")
    return "n/a" if median is None else f"{_fmt_s(median)} ({_fmt_s(low)})"


def _threads(meta: dict) -> str:
    return f"{meta['threads']} thread" + ("" if meta["threads"] == 1 else "s")


def markdown(summary: dict) -> str:
    """The tables of the summary in Markdown."""
    meta = summary["meta"]
    u, s = "world_model_update", "sequence_model"
    lines = [f"Scaling benchmark on {meta['device_name']} ({meta['device']}, {_threads(meta)}), batch "
             f"{meta['batch']}, float32, {meta['config']}; times: median (min) of {meta['repeats']} after 1 "
             f"warm-up. Memory: {meta['memory_note']}.", "",
             "| backbone | L | update s | update peak MB | update +MB | seq-model s | seq-model peak MB "
             "| seq-model +MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in summary["table"]:
        lines.append(f"| {e['backbone']} | {e['length']} | {_fmt_t(e, u)} | {_fmt_mb(e[f'{u}_peak_mb'])} "
                     f"| {_fmt_mb(e[f'{u}_peak_delta_mb'])} | {_fmt_t(e, s)} | {_fmt_mb(e[f'{s}_peak_mb'])} "
                     f"| {_fmt_mb(e[f'{s}_peak_delta_mb'])} |")
    if summary["ratios"]:
        lines += ["", "transformer / mamba2 (time: of the medians, of the minima):", "",
                  "| L | update time | update peak | update +MB | seq-model time | seq-model peak | seq-model +MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for e in summary["ratios"]:
            lines.append(f"| {e['length']} | {_fmt_x(e[f'{u}_s'])}, {_fmt_x(e[f'{u}_min_s'])} "
                         f"| {_fmt_x(e[f'{u}_peak_mb'])} | {_fmt_x(e[f'{u}_peak_delta_mb'])} "
                         f"| {_fmt_x(e[f'{s}_s'])}, {_fmt_x(e[f'{s}_min_s'])} | {_fmt_x(e[f'{s}_peak_mb'])} "
                         f"| {_fmt_x(e[f'{s}_peak_delta_mb'])} |")
    if summary["imagination"]:
        lines += ["", f"Imagination (backbone only, eval, no_grad): batch {meta['imagine_batch']}, context "
                      f"{meta['context']}, horizon {meta['horizon']}:", "",
                  "| backbone | context pass s | step loop s | steps/s | tokens/s | peak MB | +MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in summary["imagination"]:
            if "error" in row:
                lines.append(f"| {row['backbone']} | error: {row['error']} | | | | | |")
                continue
            lines.append(f"| {row['backbone']} | {_fmt_s(row['context_median_s'])} | {_fmt_s(row['median_s'])} "
                         f"| {row['imagine_steps_per_s']:.1f} | {row['imagine_tokens_per_s']:.0f} "
                         f"| {_fmt_mb(row['peak_mb'])} | {_fmt_mb(row['peak_delta_mb'])} |")
    errors = [row for row in summary["results"] if "error" in row]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {r['backbone']} {r['phase']} L={r['length']}: {r['error']}"
                                        for r in errors]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Log-log time and memory versus L per backbone, and imagination throughput per backbone (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = summary["meta"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colors = {name: f"C{i}" for i, name in enumerate(BACKBONES)}
    panels = [(axes[0, 0], "world_model_update_s", "full world-model update (s)"),
              (axes[0, 1], "sequence_model_s", "sequence model fwd+bwd (s)")]
    backbones = list(dict.fromkeys(e["backbone"] for e in summary["table"]))
    for ax, key, title in panels:
        for backbone in backbones:
            pts = [(e["length"], e[key]) for e in summary["table"] if e["backbone"] == backbone and e[key]]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color=colors.get(backbone), label=backbone)
        ax.set_title(title)
        ax.set_ylabel("seconds (median)")
    ax = axes[1, 0]
    for backbone in backbones:
        for phase, style in (("world_model_update", "o-"), ("sequence_model", "s--")):
            key = f"{phase}_peak_delta_mb"
            pts = [(e["length"], e[key]) for e in summary["table"] if e["backbone"] == backbone and e[key]]
            if pts:
                label = f"{backbone} ({'update' if phase == 'world_model_update' else 'seq model'})"
                ax.plot(*zip(*pts, strict=True), style, color=colors.get(backbone), label=label)
    metric = "CUDA max allocated" if meta["device"].startswith("cuda") else "peak RSS"
    ax.set_title(f"memory added by the measurement ({metric} - baseline)")
    ax.set_ylabel("MB")
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(meta["lengths"], [str(n) for n in meta["lengths"]])
        ax.set_xlabel(f"sequence length L (batch {meta['batch']})")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center")
    ax = axes[1, 1]
    ok = [r for r in summary["imagination"] if "error" not in r]
    ax.bar([r["backbone"] for r in ok], [r["imagine_tokens_per_s"] for r in ok],
           color=[colors.get(r["backbone"]) for r in ok])
    for i, r in enumerate(ok):
        ax.annotate(f"{r['imagine_steps_per_s']:.3g} steps/s", (i, r["imagine_tokens_per_s"]), ha="center",
                    va="bottom", fontsize=8)
    ax.set_title(f"imagination step throughput (batch {meta['imagine_batch']}, context {meta['context']}, "
                 f"horizon {meta['horizon']})")
    ax.set_ylabel("tokens / s (batch x steps/s)")
    fig.suptitle(f"DRAMA world model scaling, {meta['device_name']} ({_threads(meta)}, float32)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    parser.add_argument("--batch", type=int, help="sequences per measurement (default: 16 on CUDA, 2 on CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (median, min)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--imagine-batch", type=int, default=1024, help="imagined rollouts in parallel")
    parser.add_argument("--context", type=int, default=8, help="imagination context tokens (parallel pass)")
    parser.add_argument("--horizon", type=int, default=16, help="imagination step calls")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: 1 on CPU, see above; 0 = torch's default)")
    parser.add_argument("--isolate", choices=("auto", "process", "inline"), default="auto",
                        help="one fresh process per measurement (auto: on CPU, for its peak RSS) or inline")
    parser.add_argument("--config", default=str(ROOT / "conf/atari.yaml"), help="base config (YAML)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    wall_start = time.perf_counter()
    device = resolve_device(args.device)
    batch = args.batch or (16 if device.type == "cuda" else 2)
    isolate = args.isolate if args.isolate != "auto" else ("process" if device.type == "cpu" else "inline")
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    lengths = sorted(set(args.lengths))
    base = {"device": str(device), "batch": batch, "repeats": args.repeats, "imagine_batch": args.imagine_batch,
            "context": args.context, "horizon": args.horizon, "config": args.config, "overrides": args.overrides,
            "isolated": isolate == "process", "threads": threads}
    base_cfg = load_config(args.config, args.overrides)  # fails early on a bad config
    base.update(base_batch_length=base_cfg.train.batch_length, base_acting_context=base_cfg.train.acting_context)
    if threads:
        torch.set_num_threads(threads)
    jobs = []
    for backbone in args.backbones:
        if "imagination" in args.phases:
            jobs.append({**base, "backbone": backbone, "phase": "imagination", "length": None})
        for length in lengths:
            for phase in ("sequence_model", "world_model_update"):
                if phase in args.phases:
                    jobs.append({**base, "backbone": backbone, "phase": phase, "length": length})

    rows: list[dict] = []
    broken: dict[str, str] = {}  # backbone -> build error
    failed: dict[tuple[str, str], int] = {}  # (backbone, phase) -> shortest failed length
    for i, job in enumerate(jobs, 1):
        key = (job["backbone"], job["phase"])
        label = f"[{i}/{len(jobs)}] {job['backbone']} {job['phase']}" + (
            f" L={job['length']}" if job["length"] is not None else "")
        if job["backbone"] in broken or (job["length"] is not None and key in failed):
            reason = broken.get(job["backbone"]) or f"skipped: L={failed.get(key)} failed"
            row = {k: job[k] for k in ("backbone", "phase", "length", "batch")}
            row.update(device=str(device), error=reason, stage="skipped")
        else:
            print(f"{label} ...", file=sys.stderr, flush=True)
            row = measure_in_fresh_process(job) if isolate == "process" else measure(job)
            if "error" in row and row["stage"] == "build":
                broken[job["backbone"]] = f"not built: {row['error']}"
            elif "error" in row and job["length"] is not None:
                failed[key] = job["length"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        done = (f"error: {row['error']}" if "error" in row else f"median {row['median_s']:.4g} s" + (
            f", peak {row['peak_mb']} MB (+{row['peak_delta_mb']})" if row["peak_mb"] is not None else ""))
        print(f"{label}: {done} [{time.perf_counter() - wall_start:.0f} s]", file=sys.stderr, flush=True)

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    memory_note = ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                   "peak RSS (VmHWM) of a fresh process per measurement" if isolate == "process" else
                   "not measured (inline on CPU)") + "; +MB = peak minus the baseline after building"
    summary = {
        "benchmark": "scaling",
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "device": str(device),
            "device_name": device_name(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "batch": batch,
            "repeats": args.repeats,
            "warmup": 1,
            "lengths": lengths,
            "backbones": args.backbones,
            "phases": args.phases,
            "imagine_batch": args.imagine_batch,
            "context": args.context,
            "horizon": args.horizon,
            "config": os.path.relpath(args.config, ROOT) if Path(args.config).is_absolute() else args.config,
            "overrides": args.overrides,
            "precision": "float32",
            "isolate": isolate,
            "memory_note": memory_note,
            "malloc_env": {name: os.environ.get(name) for name in MALLOC_ENV},
            "wall_s": None,
        },
        "results": rows,
    }
    summary.update(summarize(rows, args.backbones, lengths))
    summary["meta"]["wall_s"] = round(time.perf_counter() - wall_start, 1)
    stem = out_dir / f"scaling_{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    stem.with_suffix(".md").write_text(text)
    plot(summary, stem.with_suffix(".png"))
    print(text, file=sys.stderr)
    print(f"wrote {stem}.json, {stem}.md and {stem}.png in {summary['meta']['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
