"""The device side stays free of TensorFlow: importing every ``stream`` and ``edge_agent``
module and building the whole ``edgeinfer`` parser must not import tensorflow or keras.

Runs in a fresh interpreter, because this test process may already hold TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib, json, pkgutil, sys, time
started = time.perf_counter()
imported = []
for name in ("stream", "edge_agent"):
    try:
        pkg = importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    imported.append(name)
    for info in pkgutil.walk_packages(pkg.__path__, name + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # runs the CLI on import
        importlib.import_module(info.name)
        imported.append(info.name)
from stream.cli import build_parser
parser = build_parser()
help_text = parser.format_help()
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")
    or m.startswith(("tensorflow", "tf_keras"))
)
print(json.dumps({"imported": imported, "heavy": heavy, "help": help_text,
                  "seconds": time.perf_counter() - started}))
"""


def _probe() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_stream_and_edge_agent_never_import_tensorflow() -> None:
    result = _probe()
    assert "stream.kafka" in result["imported"]
    assert "stream.replay" in result["imported"]
    assert "stream.broker" in result["imported"]
    assert "edge_agent" in result["imported"]
    assert result["heavy"] == [], f"TensorFlow/Keras modules got imported: {result['heavy'][:10]}"
    assert "replay" in result["help"]


def test_no_tensorflow_import_statement_anywhere_on_the_device_side() -> None:
    """Also the imports that only run on some path (a lazy import inside a function), which
    importing the modules would not reveal."""
    import ast

    offenders = []
    for package in ("stream", "edge_agent"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not offenders, "the device side must not import TensorFlow/Keras:\n" + "\n".join(
        offenders
    )
