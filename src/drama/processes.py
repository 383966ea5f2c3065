"""Child processes that do not outlive the process that started them.

``drama sweep`` starts processes that must not be left running when their parent dies without cleaning up (a
``kill -9``, a lost Ray worker): the MLflow server of a sweep and each trial's ``drama fit`` / ``drama evaluate``.
On Linux the kernel sends them SIGTERM when their parent dies (``PR_SET_DEATHSIG``); ``drama fit`` then saves a
checkpoint and exits 143, and ``mlflow server`` shuts its workers down. Elsewhere this is a no-op.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def terminate_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` of :class:`subprocess.Popen` that makes the child receive SIGTERM when its parent dies
    (Linux), else ``None``."""
    return _terminate_with_parent if sys.platform == "linux" else None
