"""Runs ``drama`` in this process and kills it with SIGKILL (or sends it SIGTERM) at a chosen point (the
fault-injection tests).

Usage: ``python tests/fault_driver.py POINT -- drama arguments...`` with POINT one of

* ``step:N``: at the start of env step N+1 (after N steps, between two checkpoints);
* ``save:N``: inside the checkpoint save at env step N, after the new file is written and before it replaces
  ``last.ckpt``;
* ``log:N``: right after the metrics of env step N reached MLflow;
* ``term:build`` / ``term:tracker``: SIGTERM (not a kill) during the setup of ``drama fit``: while the env, replay
  and models are built, or right after the run's MLflow record was opened.

Not part of the package: only tests start it.
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    point, args = argv[0], argv[argv.index("--") + 1:]
    kind, at = point.split(":")
    from drama import build, loop, tracking
    from drama.cli import main as drama_main

    if kind == "term":
        if at == "build":
            build_system = build.build_training_system

            def terminated_build(*a, **k):
                os.kill(os.getpid(), signal.SIGTERM)
                return build_system(*a, **k)

            build.build_training_system = terminated_build
        else:
            start = tracking.Tracker.start.__func__

            def terminated_start(cls, *a, **k):
                tracker = start(cls, *a, **k)
                os.kill(os.getpid(), signal.SIGTERM)
                return tracker

            tracking.Tracker.start = classmethod(terminated_start)
        return drama_main(args)
    at = int(at)
    if kind == "step":
        env_step = loop.DramaLoop.env_step

        def killing_env_step(self):
            if self.state.step == at:
                die()
            return env_step(self)

        loop.DramaLoop.env_step = killing_env_step
    elif kind == "save":
        replace = os.replace

        def killing_replace(src, dst, *a, **k):
            if str(dst).endswith("last.ckpt") and current["step"] == at:
                die()
            return replace(src, dst, *a, **k)

        current = {"step": -1}
        save = loop.DramaLoop.save_checkpoint

        def tracked_save(self):
            current["step"] = self.state.step
            return save(self)

        loop.DramaLoop.save_checkpoint = tracked_save
        os.replace = killing_replace
    elif kind == "log":
        track = loop.DramaLoop.track

        def killing_track(self, metrics, step):
            track(self, metrics, step)
            if step == at and any(key.startswith("world_model/") for key in metrics):
                die()

        loop.DramaLoop.track = killing_track
    else:
        raise SystemExit(f"unknown fault point {point!r}")
    return drama_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
