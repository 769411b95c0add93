"""Configuration: the typed model, the YAML loader and the config generator."""

from pocketserver.config.loader import ConfigError, load_config, parse_config
from pocketserver.config.model import Config, DatabaseConfig, ListenerConfig, RateLimit

__all__ = [
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "ListenerConfig",
    "RateLimit",
    "load_config",
    "parse_config",
]
