"""What every config-reading verb does first: load (mixq or NNCF 2.x format) and warn once, before work starts."""
from __future__ import annotations

import os
import sys


def load_checked(path, overrides: list[str]):
    """load_config, then print the NNCF translation notes and the settings warnings once, on stderr."""
    from ..checks import preflight_warnings
    from ..config import load_config

    notes: list[str] = []
    cfg = load_config(path, overrides, notes=notes)
    lines = list(dict.fromkeys(notes + preflight_warnings(cfg)))
    if os.environ.get("RANK", "0") == "0":  # once, not once per training process
        for line in lines:
            print(f"warning: {line}", file=sys.stderr)
    return cfg
