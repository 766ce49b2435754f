#!/usr/bin/env python3
"""Container health probe for the edge agent: ``edgeinfer-healthcheck [/healthz|/readyz]``.

Exits 0 when ``http://127.0.0.1:$EDGE_METRICS_PORT<path>`` answers 2xx, 1 otherwise. Used by
the image's HEALTHCHECK (liveness, /healthz) and by deploy/compose.yaml (readiness, /readyz).
Standard library only: the slim image has no curl or wget.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    if path not in ("/healthz", "/readyz"):
        print(f"usage: edgeinfer-healthcheck [/healthz|/readyz], got {path!r}", file=sys.stderr)
        return 2
    port = os.environ.get("EDGE_METRICS_PORT") or "9400"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (fixed http URL)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        return 0
    print(f"{url}: HTTP {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
