"""``python -m edge_agent.probe``: the child process of a test load (see :mod:`.child`)."""

from __future__ import annotations

import logging
import sys

from edge_agent.probe.child import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
