"""The model registry directory.

Layout: ``ROOT/<model-name>/<version>/`` holds a bundle (``model.tflite`` +
``manifest.json``); ``ROOT/<model-name>/pinned`` (optional) names the version agents must
run. Entries that cannot be a version (``copy of 1/``, a pin file naming no version) are
skipped with a warning, never fatal. Publishing copies a verified bundle in atomically;
``edgeinfer publish`` then announces it on the ``models`` topic
(:mod:`stream.announcements`). Model and version names follow one rule
(:func:`check_component`) and sort naturally (:func:`version_key`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stream.bounded import read_bounded
from stream.bundle import MANIFEST_FILE, MODEL_FILE, read_manifest, verify_bundle
from stream.exceptions import BundleError
from stream.keys import generate_keys, key_id, load_public_keys
from stream.rollout import NOBODY, Rollout, parse_rollout, read_rollout, write_rollout

logger = logging.getLogger(__name__)

PINNED_FILE = "pinned"
#: A pin file holds one version name; anything longer is not a pin.
_MAX_PIN_BYTES = 256
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def is_valid_component(value: str) -> bool:
    """Whether ``value`` can name a model or version folder (see :func:`_check_component`)."""
    return bool(_SAFE_NAME.match(value)) and value not in (".", "..")


def check_component(kind: str, value: str) -> str:
    if not is_valid_component(value):
        msg = (
            f"model {kind} {value!r} cannot be a registry folder name: use letters, digits, "
            "'.', '_', '+' or '-', starting with a letter or digit"
        )
        raise BundleError(msg)
    return value


def version_key(version: str) -> tuple[Any, ...]:
    """Natural order: ``2`` < ``10``, ``1.2`` < ``1.10``, timestamps in time order."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


_version_key = version_key  # the old private name, still imported elsewhere


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Registry:
    """A registry directory of bundles (see the module docstring for the layout)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _is_visible(p))

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (natural order).

        A folder whose name cannot be a version (``copy of 1``) is skipped with a warning:
        odd entries never stop an agent that follows the registry.
        """
        folder = self.root / check_component("name", name)
        if not folder.is_dir():
            return []
        found = []
        for p in folder.iterdir():
            if not (p.is_dir() and _is_visible(p) and (p / MANIFEST_FILE).is_file()):
                continue
            if not is_valid_component(p.name):
                logger.warning(
                    'skipping registry entry path="%s": its name cannot be a version (use '
                    "letters, digits, '.', '_', '+' or '-'; publish with `edgeinfer publish`)",
                    p,
                )
                continue
            found.append(p.name)
        return sorted(found, key=version_key)

    def latest(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def bundle_path(self, name: str, version: str) -> Path:
        """Where version ``version`` of ``name`` lives (whether or not it exists)."""
        return self.root / check_component("name", name) / check_component("version", version)

    def pinned(self, name: str) -> str | None:
        """The version in ``ROOT/<name>/pinned``, or None; a pin file that is unreadable or
        names no valid version is ignored with a warning."""
        path = self.root / check_component("name", name) / PINNED_FILE
        try:
            raw = read_bounded(path, max_bytes=_MAX_PIN_BYTES, what="pin file")
        except FileNotFoundError:
            return None
        except BundleError as exc:
            logger.warning('ignoring the pin file path="%s" error="%s"', path, exc)
            return None
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return None
        if not is_valid_component(text):
            logger.warning(
                'ignoring the pin file path="%s": %r is not a version; write it with '
                "`edgeinfer rollback --to VERSION`",
                path,
                text[:64],
            )
            return None
        return text

    def pin(self, name: str, version: str) -> None:
        """Make agents run ``version`` of ``name`` (it must be published)."""
        if not (self.bundle_path(name, version) / MANIFEST_FILE).is_file():
            have = ", ".join(self.versions(name)) or "none"
            msg = f"cannot pin {name} to {version}: not in {self.root} (published: {have})"
            raise BundleError(msg)
        _write_text_atomic(self.root / name / PINNED_FILE, version + "\n")
        logger.info('pinned model="%s" version="%s"', name, version)

    def unpin(self, name: str) -> None:
        path = self.root / check_component("name", name) / PINNED_FILE
        path.unlink(missing_ok=True)

    def rollout(self, name: str, version: str) -> Rollout | None:
        """The version's ``rollout.json`` (None: every agent adopts it); unreadable or
        malformed: :data:`stream.rollout.NOBODY`, logged (unsigned metadata may only delay)."""
        folder = self.bundle_path(name, version)
        try:
            return read_rollout(folder)
        except BundleError as exc:
            logger.warning(
                'rollout file ignored, version not adopted path="%s" error="%s"', folder, exc
            )
            return NOBODY

    def set_rollout(self, name: str, version: str, rollout: Rollout) -> Path:
        """Write (or change) the rollout of a published version."""
        folder = self.bundle_path(name, version)
        if not (folder / MANIFEST_FILE).is_file():
            have = ", ".join(self.versions(name)) or "none"
            msg = f"{name} version {version} is not in {self.root} (published: {have})"
            raise BundleError(msg)
        return write_rollout(folder, rollout)

    def current(self, name: str) -> str | None:
        """The version agents should run: the pinned one, else the latest."""
        return self.pinned(name) or self.latest(name)

    def publish(self, bundle_dir: Path | str, *, rollout: Rollout | None = None) -> Path:
        """Verify ``bundle_dir`` (model hash) and copy it to ``ROOT/<name>/<version>/``.

        Atomic (copy to a hidden sibling, then rename). Publishing the same model again is
        a no-op (but for ``rollout``, which is written again); another model under an
        existing version is refused. ``rollout`` is written as the version's
        ``rollout.json`` before the version appears (:mod:`stream.rollout`).
        """
        bundle = verify_bundle(Path(bundle_dir), require_signature=False)
        manifest = bundle.manifest
        dest = self.bundle_path(manifest.name, manifest.version)
        if dest.exists():
            existing = read_manifest(dest)
            if existing.model_sha256 == manifest.model_sha256:
                logger.info('already published model="%s" version="%s"', *_nv(manifest))
                if rollout is not None:
                    write_rollout(dest, rollout)
                return dest
            msg = (
                f"{manifest.name} version {manifest.version} is already in {self.root} with "
                "another model: give the new bundle a new version"
            )
            raise BundleError(msg)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.", dir=dest.parent))
        try:
            for file in (MODEL_FILE, MANIFEST_FILE):
                shutil.copy2(bundle.path / file, tmp / file)
            if rollout is not None:
                write_rollout(tmp, rollout)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info('published model="%s" version="%s" path="%s"', *_nv(manifest), dest)
        return dest


def _nv(manifest: Any) -> tuple[str, str]:
    return manifest.name, manifest.version


def _is_visible(path: Path) -> bool:
    return not path.name.startswith(".")


# ------------------------------------------------------------------ CLI handlers


def registry_root(flag: str | None) -> Path:
    """``--registry``, else ``EDGE_REGISTRY``, else ``./registry``."""
    from stream.env import edge_environment

    return Path(flag or edge_environment().get("registry") or "registry")


def run_keys_generate(args: argparse.Namespace) -> int:
    """``edgeinfer keys generate --out DIR``."""
    out = Path(args.out)
    private, public = out / "edgeinfer.key", out / "edgeinfer.pub"
    if not args.force and (private.exists() or public.exists()):
        msg = f"{private} or {public} already exists: pass --force to replace the key pair"
        raise BundleError(msg)
    generate_keys(private, public)
    print(f"private key: {private} (keep it secret; sign bundles with it)")
    print(f"public key:  {public} (give it to agents: --public-key)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """``edgeinfer verify BUNDLE [--key PUB]``: prints OK or the failure, exit 1 on failure."""
    try:
        keys = load_public_keys(Path(args.key)) if args.key else None
        bundle = verify_bundle(Path(args.bundle), public_key=keys)
    except BundleError as exc:
        print(f"FAILED: {exc}")
        return 1
    m = bundle.manifest
    if keys:
        signed = f"signature OK (key {', '.join(key_id(k) for k in keys)})"
    elif m.signature:
        signed = f"signed by key {m.signature.get('key_id')} (not checked: pass --key)"
    else:
        signed = "unsigned"
    print(f"OK {m.name} {m.version} {m.variant} sha256={m.model_sha256[:16]} {signed}")
    return 0


def rollout_from_args(args: argparse.Namespace) -> Rollout | None:
    """``--rollout-share``/``--rollout-mode`` of ``edgeinfer publish`` (None: neither given)."""
    share, mode = getattr(args, "rollout_share", None), getattr(args, "rollout_mode", None)
    if share is None and mode is None:
        return None
    return parse_rollout({"share": 1.0 if share is None else share, "mode": mode or "serve"})


def run_publish(args: argparse.Namespace) -> int:
    """``edgeinfer publish BUNDLE [--registry DIR] [--topic models] [--no-topic]``."""
    from stream.settings import settings_from_args

    bundle_dir = Path(args.bundle)
    keys = load_public_keys(Path(args.key)) if args.key else None
    verify_bundle(bundle_dir, public_key=keys)
    rollout = rollout_from_args(args)
    dest = Registry(registry_root(args.registry)).publish(bundle_dir, rollout=rollout)
    print(f"registry: {dest}")
    if not args.no_topic:
        from stream.announcements import announce
        from stream.kafka import quiet_kafka_logs

        settings = settings_from_args(args)
        quiet_kafka_logs()
        ann = announce(
            settings, dest, topic=args.topic, inline_limit=args.inline_limit, rollout=rollout
        )
        how = "inline" if ann.model_b64 is not None else f"by reference {ann.uri}"
        print(f"announced {ann.name} {ann.version} on {args.topic!r} ({how})")
    return 0
