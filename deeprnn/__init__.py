"""deeprnn: watch a deep recurrent network learn."""
from .config import ConfigError, RunConfig, preset

__all__ = ["ConfigError", "RunConfig", "preset"]
