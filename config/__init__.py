"""Settings for every concern, loaded from a TOML file and ``KIZUNA_``-prefixed variables."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
