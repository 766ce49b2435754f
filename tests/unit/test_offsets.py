"""The commit rule: min(next offset, oldest held by a window, oldest waiting in the batch)."""

from __future__ import annotations

import numpy as np

from edge_agent.offsets import Offsets
from edge_agent.windows import DeviceWindows


def readings(start: int, n: int, channels: int = 2) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(channels, axis=1)


def test_commits_below_open_windows_and_waiting_batch() -> None:
    windows = DeviceWindows(window=3, stride=3, channels=2)
    offsets = Offsets()
    # partition 0: device a holds offsets 10.. (incomplete), messages up to 19 handled
    windows.add("a", 1, readings(0, 2), partition=0, offset=10, now=0.0)
    offsets.next = {0: 20, 1: 7}
    offsets.committed = {0: 5, 1: 7}
    got = offsets.committable(windows.min_held, [])
    assert got == {0: 10}  # partition 1 has nothing new
    # a full window of partition 1 waits in the batch from offset 3: nothing past 3
    offsets.committed[1] = 0
    got = offsets.committable(windows.min_held, [(1, 3)])
    assert got == {0: 10, 1: 3}
    # once device a's window is complete and nothing waits, everything handled commits
    windows.add("a", 2, readings(2, 1), partition=0, offset=19, now=0.0)
    got = offsets.committable(windows.min_held, [])
    assert got == {0: 20, 1: 7}


def test_handled_starts_the_assignment_and_rewind_forgets_positions() -> None:
    offsets = Offsets()
    offsets.handled(2, 40, 49)
    assert (offsets.committed, offsets.next, offsets.advanced) == ({2: 40}, {2: 50}, True)
    offsets.mark_committed({2: 50})
    assert (offsets.committed, offsets.advanced) == ({2: 50}, False)
    offsets.handled(2, 50, 51)
    assert offsets.rewind_targets([2, 3]) == {2: 50}
    assert offsets.next == {}
    offsets.forget([2])
    assert offsets.committed == {}
