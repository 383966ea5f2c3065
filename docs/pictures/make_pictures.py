"""Regenerate the example pictures in this folder from real tiny Pong runs (about 20 minutes on 2 CPU cores).

    python docs/pictures/make_pictures.py [work folder]

Two runs of conf/debug.yaml (made smaller, as tests/conftest.py SMALL_DEBUG does; 100-step episodes) of 300 and
1200 env steps, each evaluated greedily; ``drama report`` on both gives ``learning_curves.png`` (the short run:
few episodes as markers; the long one: a rolling mean over its faint raw points); the long run's last
``reconstruction.png`` and labelled imagination GIF are copied from its ``visuals/`` folder.

``DramaLoop.log_visuals`` writes both labelled pictures (``labelled_reconstruction`` / ``labelled_imagination`` of
:mod:`drama.visuals`) next to the raw 64x64 imagination GIF.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from drama.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SMALL = ["env.max_episode_frames=400", "train.prefill_steps=20", "train.batch_size=2", "train.batch_length=8",
         "imagination.batch_size=8", "imagination.context_length=4", "imagination.horizon=6", "train.log_every=10",
         "train.checkpoint_every=0", "runtime.progress=false"]


def run(out: Path, name: str, steps: int) -> Path:
    assert main(["fit", "--config", str(ROOT / "conf/debug.yaml"), *SMALL, f"train.total_steps={steps}",
                 f"train.visuals_every={steps}", f"runtime.output_dir={out}", f"runtime.run_name={name}"]) == 0
    assert main(["evaluate", str(out / name), "--episodes", "1", "--no-progress"]) == 0
    return out / name


def make(out: Path) -> None:
    short, long = run(out, "pong-300-steps", 300), run(out, "pong-1200-steps", 1200)
    assert main(["report", str(short), str(long), "--out", str(out / "report"), "--reps", "200"]) == 0
    shutil.copy(out / "report" / "learning_curves.png", HERE / "learning_curves.png")
    visuals = long / "visuals"
    shutil.copy(sorted(visuals.glob("*_reconstruction.png"))[-1], HERE / "reconstruction.png")
    shutil.copy(sorted(visuals.glob("*_imagination_vs_real.gif"))[-1], HERE / "imagination.gif")


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="drama-pictures-")))
