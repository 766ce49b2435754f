"""Reading a file that may be hostile without an unbounded read: :func:`read_bounded`.

Bundles, pin files, announced ``file://`` models and the agent's state files are read with
it: a regular file only (a device, FIFO, socket or folder is refused before a byte is
read), at most a cap, and exactly the size a manifest states when it states one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from stream.exceptions import BundleError

_CHUNK = 1 << 20


def read_bounded(
    path: Path,
    *,
    max_bytes: int,
    what: str,
    expected_size: int | None = None,
    fix: str = "",
) -> bytes:
    """The bytes of the regular file ``path``: at most ``max_bytes``, and exactly
    ``expected_size`` when given; :class:`BundleError` otherwise.

    Nothing unbounded is read: the file is opened without blocking (a FIFO cannot hang the
    reader) and checked on the open descriptor (a device such as ``/dev/zero``, a FIFO, a
    socket or a directory, also behind a symlink, is refused before a byte is read); the cap
    is enforced while reading, so a file that grows meanwhile is cut off and refused.
    A missing file raises :class:`FileNotFoundError`; ``fix`` is added to the message of a
    file over the cap.
    """
    hint = f" ({fix})" if fix else ""
    limit = max_bytes if expected_size is None else min(expected_size, max_bytes)
    if expected_size is not None and expected_size > max_bytes:
        msg = (
            f"{what} {path} is announced as {expected_size} bytes, over the cap of {max_bytes}: "
            f"refused{hint}"
        )
        raise BundleError(msg)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        msg = f"cannot read {what} {path}: {exc.strerror or exc}"
        raise BundleError(msg) from exc
    mode = os.fstat(fd)
    if not stat.S_ISREG(mode.st_mode):
        os.close(fd)
        msg = f"{what} {path} is not a regular file (a device, FIFO, socket or folder): refused"
        raise BundleError(msg)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if expected_size is not None and mode.st_size != expected_size:
            raise BundleError(_size_mismatch(what, path, mode.st_size, expected_size))
        if mode.st_size > limit:
            msg = f"{what} {path} is {mode.st_size} bytes, over the cap of {limit}: refused{hint}"
            raise BundleError(msg)
        chunks: list[bytes] = []
        total = 0
        while chunk := fh.read(max(0, min(_CHUNK, limit + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                msg = f"{what} {path} grew beyond {limit} bytes while read: refused{hint}"
                raise BundleError(msg)
    data = b"".join(chunks)
    if expected_size is not None and len(data) != expected_size:
        raise BundleError(_size_mismatch(what, path, len(data), expected_size))
    return data


def _size_mismatch(what: str, where: object, size: int, expected: int) -> str:
    return (
        f"{what} {where} is {size} bytes, which does not match the manifest's model_size "
        f"{expected}: refused (altered or truncated)"
    )
