"""Ed25519 key files: the pair that signs bundles (``edgeinfer keys generate``), reading
the private key and the trusted public keys (one file, or a folder of ``*.pub`` during a
key rotation), and a key's id as written in a signed manifest.

``cryptography`` is imported only inside these functions: importing this module costs
nothing at an agent's start-up. Signing and verifying manifests is :mod:`stream.bundle`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from stream.exceptions import BundleError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


def generate_keys(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair as PEM files (private key mode 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode only applies to a new file: an overwritten key must not keep 0644.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    hint = "make one with `edgeinfer keys generate`"
    load = functools.partial(serialization.load_pem_private_key, password=None)
    key = _read_key(path, load, Ed25519PrivateKey, "private key", hint, f"; {hint}")
    return cast("Ed25519PrivateKey", key)


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    hint = "pass the .pub file from `keys generate`"
    load = serialization.load_pem_public_key
    return cast("Ed25519PublicKey", _read_key(path, load, Ed25519PublicKey, "public key", hint, ""))


def _read_key(
    path: Path,
    load: Callable[[bytes], object],
    kind: type,
    what: str,
    unreadable_hint: str,
    wrong_kind_hint: str,
) -> object:
    """``load(path's bytes)``, which must give a ``kind``; errors name the path and the fix."""
    try:
        key = load(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read {what} {path}: {exc}; {unreadable_hint}"
        raise BundleError(msg) from exc
    if not isinstance(key, kind):
        msg = f"{path} is not an Ed25519 {what}{wrong_kind_hint}"
        raise BundleError(msg)
    return key


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """The trusted keys at ``path``: one PEM file, or a folder whose ``*.pub`` files are all
    trusted (during a key rotation, the old and the new key)."""
    path = Path(path)
    if not path.is_dir():
        return [load_public_key(path)]
    files = sorted(p for p in path.glob("*.pub") if not p.name.startswith("."))
    if not files:
        msg = (
            f"no public key (*.pub) in {path}: put the .pub file of `edgeinfer keys generate` there"
        )
        raise BundleError(msg)
    return [load_public_key(p) for p in files]


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
