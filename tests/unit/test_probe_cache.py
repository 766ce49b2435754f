"""The test-load cache (:class:`edge_agent.probe.ProbeCache`) and what :class:`Prober` does
with it, without a real model: a hit needs no child, anything that differs is a miss.

The child test loads themselves (fork and exec, crashing models) are in
tests/integration/test_agent_models.py.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from edge_agent import probe
from edge_agent.probe import ProbeCache, ProbeKey, Prober, ProbeResult
from edge_agent.probe import cache as cache_module
from edge_agent.probe import prober as prober_module

OK = {"ok": True, "runtime": "ai_edge_litert", "batchable": True}
KEY = ProbeKey(sha256="ab" * 32, num_threads=1, use_default_delegates=True)


@pytest.fixture
def cache(tmp_path: Path) -> ProbeCache:
    return ProbeCache(tmp_path / "probe-cache")


def test_a_pass_is_remembered(cache: ProbeCache) -> None:
    assert cache.get(KEY) is None
    cache.put(KEY, OK)
    assert cache.get(KEY) == OK
    assert ProbeCache(cache.directory).get(KEY) == OK  # another process, same state dir


@pytest.mark.parametrize(
    "other",
    [
        ProbeKey(sha256="cd" * 32, num_threads=1, use_default_delegates=True),
        ProbeKey(sha256="ab" * 32, num_threads=2, use_default_delegates=True),
        ProbeKey(sha256="ab" * 32, num_threads=1, use_default_delegates=False),
    ],
    ids=["other-model", "other-threads", "other-delegates"],
)
def test_other_bytes_or_options_are_a_miss(cache: ProbeCache, other: ProbeKey) -> None:
    cache.put(KEY, OK)
    assert cache.get(other) is None


def test_another_installation_is_a_miss(cache: ProbeCache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.put(KEY, OK)
    changed = {**probe.installation(), "packages": {"ai_edge_litert": {"files": [["x.so", 1, 2]]}}}
    monkeypatch.setattr(cache_module, "installation", lambda: changed)
    assert cache.get(KEY) is None


def test_the_installation_covers_litert_numpy_this_code_and_python() -> None:
    inst = probe.installation()
    assert inst["packages"]["numpy"]["files"], inst["packages"]["numpy"]
    litert = inst["packages"]["ai_edge_litert"]
    if litert is not None:  # the agent extra is installed
        assert any(name.endswith(".so") for name, _, _ in litert["files"])
    package = Path(probe.__file__).parent  # every module of the package, found, not listed
    modules = [f"probe/{path.name}" for path in sorted(package.glob("*.py"))]
    assert [name for name, _, _ in inst["code"]] == [*modules, "runtime.py"]
    assert {"probe/child.py", "probe/process.py", "probe/cache.py"} <= set(modules)
    assert inst["python"][1].startswith("3.")
    assert inst["cpu"]


def test_a_rewritten_library_changes_its_stamp(tmp_path: Path) -> None:
    lib = tmp_path / "_interpreter.so"
    lib.write_bytes(b"v1")
    (tmp_path / "helper.py").write_text("")  # not a native library: not stamped
    before = cache_module._file_stamps(tmp_path)
    assert [name for name, _, _ in before] == ["_interpreter.so"]
    lib.write_bytes(b"v2 longer")
    os.utime(lib, ns=(1, 1))
    assert cache_module._file_stamps(tmp_path) != before


def test_failures_are_never_cached(cache: ProbeCache) -> None:
    cache.put(KEY, {"ok": False, "error": "LiteRT crashed"})
    assert cache.get(KEY) is None


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps(["a list"]), json.dumps({"identity": {}, "report": OK})],
    ids=["corrupt", "not-an-object", "other-identity"],
)
def test_unreadable_or_foreign_entries_are_misses(cache: ProbeCache, content: str) -> None:
    cache.put(KEY, OK)
    (entry,) = cache.directory.glob("*.json")
    entry.write_text(content)
    assert cache.get(KEY) is None


def test_only_the_newest_entries_are_kept(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path, keep=2)
    keys = [ProbeKey(f"{i:064x}", num_threads=1, use_default_delegates=True) for i in range(3)]
    for i, key in enumerate(keys):
        cache.put(key, OK)
        os.utime(cache.path(key), ns=(i + 1, i + 1))  # put order, whatever the clock says
    assert sorted(tmp_path.glob("*.json")) == sorted(cache.path(k) for k in keys[1:])
    assert cache.get(keys[0]) is None
    assert cache.get(keys[2]) == OK


def test_a_state_dir_that_cannot_be_written_only_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = ProbeCache(blocker / "probe-cache")  # a folder under a file: mkdir fails
    with caplog.at_level(logging.WARNING, logger="edge_agent.probe"):
        cache.put(KEY, OK)
    assert cache.get(KEY) is None
    assert "cannot write the probe cache" in caplog.text


class _NoChild:
    """Stands in for ProbeProcess: records that a child would have been started."""

    started: list[dict[str, Any]] = []

    def __init__(self, model: bytes, **kwargs: Any) -> None:
        _NoChild.started.append(kwargs)

    def result(self, what: str | None = None) -> ProbeResult:
        return ProbeResult(ok=True, details=dict(OK))


@pytest.fixture
def no_child(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    _NoChild.started = []
    monkeypatch.setattr(prober_module, "ProbeProcess", _NoChild)
    return _NoChild.started


def test_prober_runs_a_child_on_a_miss_and_none_on_a_hit(
    cache: ProbeCache, no_child: list[dict[str, Any]]
) -> None:
    first = Prober(cache=cache).probe(b"model", what="m")
    assert first.ok and not first.cached
    assert len(no_child) == 1
    second = Prober(cache=cache)  # a restart
    again = second.probe(b"model", what="m")
    assert again.ok and again.cached and again.details == OK
    second.start(b"model", what="m")  # nothing to start either
    assert len(no_child) == 1 and second.children == 0
    Prober(cache=cache).probe(b"model", what="m", num_threads=2)
    assert len(no_child) == 2


def test_prober_hands_a_started_child_to_the_same_bytes_only(
    no_child: list[dict[str, Any]],
) -> None:
    prober = Prober()
    prober.start(b"model", what="early")
    prober.start(b"model", what="early")  # already running: not twice
    assert len(no_child) == 1 and no_child[0]["fork"] is True
    assert prober.probe(b"model", what="m").ok
    assert len(no_child) == 1  # the early child's result
    prober.probe(b"other bytes", what="m")
    assert len(no_child) == 2 and no_child[1].get("fork", False) is False
