"""The one module that reads the process environment.

Everything else receives values from here (through the settings objects), never from
``os.environ`` directly. Variables are named ``EDGE_<SETTING>`` in upper case.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFIX = "EDGE_"


def edge_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the ``EDGE_*`` variables as ``{setting_name: value}`` (lower case, no prefix)."""
    source = os.environ if environ is None else environ
    return {
        key[len(PREFIX) :].lower(): value
        for key, value in source.items()
        if key.startswith(PREFIX) and value != ""
    }


def env_name(setting: str) -> str:
    """``bootstrap_servers`` -> ``EDGE_BOOTSTRAP_SERVERS`` (for help texts and messages)."""
    return PREFIX + setting.upper()
