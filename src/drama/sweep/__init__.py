"""``drama sweep SWEEP.yaml``: a fixed grid of trials (each ``drama fit`` then ``drama evaluate``) run with Ray.

* :mod:`drama.sweep.file`: the sweep file, its trials and their folder names, validated before anything starts;
* :mod:`drama.sweep.trial`: one trial inside a Ray worker (one subprocess; which failures are retried);
* :mod:`drama.sweep.driver`: the MLflow server, Ray, ``ray.wait`` over the trials, ``sweep.json``, the report;
* :mod:`drama.sweep.progress`: the live table of trials.

Why Ray tasks, not Ray Tune: the grid is fixed and every trial is already a resumable run folder, so a trial is one
``ray.remote`` function (``num_cpus`` / ``num_gpus`` from the sweep's ``resources``, ``max_retries``) whose results
the driver collects with ``ray.wait``; Tune's searchers, schedulers, trial checkpointing and result directories
would duplicate what the run folder already does.
"""

from drama.sweep.driver import run_sweep
from drama.sweep.file import Sweep, Trial, dry_run, load_sweep, trial_names

__all__ = ["Sweep", "Trial", "dry_run", "load_sweep", "run_sweep", "trial_names"]
