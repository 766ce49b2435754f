"""Sensor JSON decoding with orjson against the reference parser (``--only decoding``).

In one process pinned to the measured core (``bench.decode_cost``): the client-bound case's
sensor chunks decoded by ``decode_sensor_record`` with orjson and with the standard
library's parser (the reference rules, as on an install without orjson), alternating, each
side first in turn; CPU time per message. Both must decode every message to the same
samples. Summary: ``sensor_decode_orjson_vs_stdlib`` (median of the per-round ratios),
with its spread in ``spreads``.
"""

from __future__ import annotations

from bench.harness import Harness
from bench.procs import python_command, run_json


def run(h: Harness) -> None:
    seconds = 0.5 if h.config.quick else 1.0
    rounds = 4 if h.config.quick else 6
    out = run_json(
        name="sensor decoding",
        cmd=python_command("bench.decode_cost", "--seconds", str(seconds), "--rounds", str(rounds)),
        log_path=h.logs / "decode-cost.log",
        cpus=[h.cpu],
        timeout_s=seconds * rounds * 2 * 5 + 120,
    )
    ratio = out["fast_vs_reference"]
    h.summary["sensor_decode_orjson_vs_stdlib"] = ratio["median"]
    h.spreads["sensor_decode_orjson_vs_stdlib"] = ratio
    h.details["decoding"] = out
    h.progress(
        f"sensor decoding: orjson {out['fast']['median']:,.0f}/s, standard library "
        f"{out['reference']['median']:,.0f}/s per CPU second: {ratio['median']:.2f}x "
        f"(min {ratio['min']:.2f}, max {ratio['max']:.2f})"
    )
