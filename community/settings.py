"""Settings of the community features (``[community]`` in the TOML, ``KIZUNA_COMMUNITY__*``).

Defined with the other settings in ``config.settings``; re-exported here for community code.
"""

from config.settings import CommunitySettings

__all__ = ["CommunitySettings"]
