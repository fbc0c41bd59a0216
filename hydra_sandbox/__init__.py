"""Hydra: delegate work to Codex CLI agents, each in its own hardened Docker container."""

from hydra_sandbox.errors import HydraError

__version__ = "0.1.0"

__all__ = ["HydraError", "__version__"]
