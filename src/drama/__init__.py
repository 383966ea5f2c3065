"""drama: DRAMA (Mamba-2 world-model RL) on Lightning, TorchRL and MLflow."""

from drama.version import __version__

__all__ = ["__version__"]
