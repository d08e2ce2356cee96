"""Config: a pydantic schema and a YAML loader that reports errors with line numbers."""

from .loader import ConfigError, ConfigIssue, load_config
from .schema import AgentConfig

__all__ = ["AgentConfig", "ConfigError", "ConfigIssue", "load_config"]
