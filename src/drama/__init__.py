"""drama: DRAMA (Mamba-2 world-model RL) on Lightning, TorchRL and MLflow."""

__version__ = "0.1.0"
