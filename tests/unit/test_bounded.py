"""Bounded reads of files that may be hostile (stream/bounded.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from stream.bounded import read_bounded
from stream.exceptions import BundleError


def test_read_bounded_refuses_devices_fifos_and_folders_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "zero-link"
    link.symlink_to("/dev/zero")
    outcome: dict[str, list[str]] = {"errors": []}

    def read_all() -> None:
        for path in (Path("/dev/zero"), link, fifo, tmp_path):
            try:
                read_bounded(path, max_bytes=1 << 30, what="model")
            except BundleError as exc:
                outcome["errors"].append(str(exc))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a read hung (FIFO) or read a device"
    assert len(outcome["errors"]) == 4
    for error in outcome["errors"]:
        assert "is not a regular file (a device, FIFO, socket or folder): refused" in error


def test_read_bounded_enforces_the_cap_while_reading() -> None:
    """/proc files say they are 0 bytes long and then yield more: only the read can tell."""
    proc = Path("/proc/self/status")
    assert proc.stat().st_size == 0 and len(proc.read_bytes()) > 100
    with pytest.raises(BundleError, match="grew beyond 100 bytes while read: refused"):
        read_bounded(proc, max_bytes=100, what="manifest")


def test_read_bounded_checks_the_expected_size(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"x" * 10)
    assert read_bounded(tmp_path / "m", max_bytes=10, what="model", expected_size=10) == b"x" * 10
    with pytest.raises(BundleError, match="10 bytes, which does not match the manifest's"):
        read_bounded(tmp_path / "m", max_bytes=100, what="model", expected_size=11)
    with pytest.raises(BundleError, match="announced as 11 bytes, over the cap of 10"):
        read_bounded(tmp_path / "m", max_bytes=10, what="model", expected_size=11)
    with pytest.raises(BundleError, match=r"over the cap of 5: refused \(raise it\)$"):
        read_bounded(tmp_path / "m", max_bytes=5, what="model", fix="raise it")
