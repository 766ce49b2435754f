"""Image folders as users bring them: ``DIR/<label>/...`` of mixed sizes and formats.

:func:`scan_folder` lists the files of every class folder (optionally ``DIR/train/<label>``
and ``DIR/test/<label>``) and reads only their headers (size and colour mode);
:func:`choose_geometry` picks the model's input size (``--image-size`` or the median size,
capped for small devices) and colour (``L``/``RGB``, or inferred from the files);
:func:`read_image` decodes one file and fits it with :func:`stream.preprocessing.resize_image`,
the resize the agent applies to every frame. PNG and JPEG bytes go through
:func:`stream.codecs.decode_image`, the agent's own decoder; other formats Pillow reads
(BMP, GIF, WebP, TIFF, ...) through Pillow, converted to grey or RGB the same way.

A file that cannot be used (not an image, truncated, too large, hidden, outside a class
folder) never stops anything: it becomes a :class:`SkippedFile` with the reason.
numpy and Pillow only: no TensorFlow.
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.codecs import decode_image
from stream.codecs.images import DEFAULT_MAX_PIXELS, _to_array, sniff_content_type
from stream.exceptions import ConfigError, DatasetError, DecodeError
from stream.preprocessing import ImageColor, resize_image

logger = logging.getLogger(__name__)

#: ``--image-size`` default: the median size, scaled down so its longer side is at most this.
MAX_AUTO_SIDE = 96
#: Files larger than this are not read (a camera JPEG is a few MB).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Pillow modes that hold one grey channel (the rest are converted to RGB).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: Threads decoding files at once (Pillow releases the GIL while it decodes).
DECODE_THREADS = min(4, os.cpu_count() or 1)


class ImageFileError(DatasetError):
    """One file of an image folder cannot be used; ``str(err)`` is the reason."""


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the data, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class ImageFile:
    """One usable file: its class and what its header says."""

    path: Path
    label: int
    height: int
    width: int
    grey: bool


@dataclass(frozen=True)
class ImageGeometry:
    """The model's input: every image is fitted to ``height x width`` in ``color``."""

    height: int
    width: int
    color: ImageColor

    @property
    def channels(self) -> int:
        return 1 if self.color == "L" else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclass
class ImageFolder:
    """The files of an image folder, by split, and the files left out."""

    root: Path
    labels: list[str]
    train: list[ImageFile]
    #: Files of ``DIR/test/<label>``; empty when the folder has no own test split.
    test: list[ImageFile]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def has_test_split(self) -> bool:
        return bool(self.test)

    def split(self, *, seed: int, test_fraction: float) -> tuple[list[ImageFile], list[ImageFile]]:
        """(train, test): the folder's own split, else a stratified one of ``train``."""
        if self.has_test_split:
            return list(self.train), list(self.test)
        return stratified_files(self.train, test_fraction=test_fraction, seed=seed)


def stratified_files(
    files: Sequence[ImageFile], *, test_fraction: float, seed: int
) -> tuple[list[ImageFile], list[ImageFile]]:
    """:func:`stream.datasets.stratified_split` of a file list (same rule, same seed)."""
    from stream.datasets import stratified_split

    index = np.arange(len(files))
    labels = np.array([f.label for f in files], dtype=np.int64)
    tr, _, te, _ = stratified_split(index, labels, test_fraction=test_fraction, seed=seed)
    return [files[i] for i in tr], [files[i] for i in te]


def parse_image_size(text: str) -> tuple[int, int]:
    """``--image-size``: ``HxW`` (``48x64``) or one number for a square."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or not all(1 <= s <= 4096 for s in sizes):
        msg = f"--image-size {text!r}: use HxW in pixels, e.g. 64x64 or 48x64 (1..4096)"
        raise ConfigError(msg)
    return sizes[0], sizes[1]


def scan_folder(root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFolder:
    """List the files of ``root`` by class and read their headers; nothing is decoded.

    Raises :class:`DatasetError` only when the folder itself is unusable (missing, no class
    folders, no readable image); bad files are skipped with a reason.
    """
    from PIL import Image

    if not root.is_dir():
        msg = f"image folder {root} does not exist"
        raise DatasetError(msg)
    split_dirs = (root / "train", root / "test")
    has_split = all(d.is_dir() for d in split_dirs)
    base = root / "train" if has_split else root
    labels = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not labels:
        msg = f"{base} has no class subfolders (expected {base}/<label>/<image files>)"
        raise DatasetError(msg)
    skipped: list[SkippedFile] = []
    with warnings.catch_warnings():
        # Pillow warns from ~89 Mpixels; ``max_pixels`` decides here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        train = _scan_split(base, labels, skipped, max_pixels, Image)
        test = _scan_split(root / "test", labels, skipped, max_pixels, Image) if has_split else []
    for extra in _loose_files(root, has_split=has_split):
        skipped.append(SkippedFile(str(extra), "not in a class folder (DIR/<label>/...)"))
    if not train:
        msg = (
            f"no readable image under {base}/<label>/ ({len(skipped)} files skipped"
            + (f", first: {skipped[0].path}: {skipped[0].reason}" if skipped else "")
            + ")"
        )
        raise DatasetError(msg)
    if has_split and not test:
        msg = f"{root / 'test'} has no readable image under its class folders"
        raise DatasetError(msg)
    return ImageFolder(root=root, labels=labels, train=train, test=test, skipped=skipped)


def _scan_split(
    base: Path, labels: list[str], skipped: list[SkippedFile], max_pixels: int, image: Any
) -> list[ImageFile]:
    files: list[ImageFile] = []
    known = set(labels)
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if folder.name not in known:
            for path in _files_under(folder):
                skipped.append(SkippedFile(str(path), f"class {folder.name!r} is not in train"))
            continue
        label = labels.index(folder.name)
        for path in _files_under(folder):
            try:
                files.append(_header(path, label, max_pixels, image))
            except ImageFileError as exc:
                skipped.append(SkippedFile(str(path), str(exc)))
    return files


def _files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (sorted), hidden folders left out."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / name for name in sorted(filenames))
    return out


def _loose_files(root: Path, *, has_split: bool) -> list[Path]:
    """Files that belong to no class: directly in ``root`` (or ``root/train``, ``root/test``)."""
    tops = [root, root / "train", root / "test"] if has_split else [root]
    return sorted(p for top in tops for p in top.iterdir() if p.is_file())


def _header(path: Path, label: int, max_pixels: int, image: Any) -> ImageFile:
    name = path.name
    if name.startswith("."):
        raise ImageFileError("hidden file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise ImageFileError("empty file")
        if size > MAX_FILE_BYTES:
            msg = f"file of {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}"
            raise ImageFileError(msg)
        with image.open(path) as im:
            width, height = im.size
            mode = im.mode
    except ImageFileError:
        raise
    except Exception as exc:  # noqa: BLE001  Pillow raises many types on junk
        raise ImageFileError(_reason(exc)) from exc
    if width < 1 or height < 1:
        msg = f"image of size {width}x{height}"
        raise ImageFileError(msg)
    if width * height > max_pixels:
        msg = f"image of {width}x{height} pixels, over the limit of {max_pixels:,}"
        raise ImageFileError(msg)
    return ImageFile(path=path, label=label, height=height, width=width, grey=mode in GREY_MODES)


def _reason(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image (Pillow cannot identify its format)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"not a readable image ({type(exc).__name__}: {text[:200]})"


def choose_geometry(
    files: Iterable[ImageFile],
    *,
    image_size: tuple[int, int] | None = None,
    color: ImageColor | None = None,
    max_side: int = MAX_AUTO_SIDE,
) -> ImageGeometry:
    """The model's input size and colour.

    Size: ``image_size`` (H, W), else the median height and width of ``files`` scaled down
    (aspect kept) until the longer side is at most ``max_side``. Colour: ``color``, else
    ``L`` when every file is grey, else ``RGB``.
    """
    listed = list(files)
    if not listed:
        msg = "no image to choose an input size from"
        raise DatasetError(msg)
    if color is not None and color not in ("L", "RGB"):
        msg = f"--color {color!r}: use L (grey) or RGB"
        raise ConfigError(msg)
    chosen: ImageColor = color or ("L" if all(f.grey for f in listed) else "RGB")
    if image_size is not None:
        return ImageGeometry(height=image_size[0], width=image_size[1], color=chosen)
    height = float(statistics.median(f.height for f in listed))
    width = float(statistics.median(f.width for f in listed))
    scale = min(1.0, max_side / max(height, width))
    return ImageGeometry(
        height=max(1, round(height * scale)), width=max(1, round(width * scale)), color=chosen
    )


def read_image(
    path: Path, geometry: ImageGeometry, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``path`` and fit it to ``geometry``: uint8 (height, width, channels).

    Raises :class:`ImageFileError` with the reason when the file cannot be used.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the file ({exc.strerror or exc})"
        raise ImageFileError(msg) from exc
    if len(data) > MAX_FILE_BYTES:
        msg = f"file of {len(data):,} bytes, over the limit of {MAX_FILE_BYTES:,}"
        raise ImageFileError(msg)
    try:
        if sniff_content_type(data) is not None:
            # PNG / JPEG / .npy: the agent's decoder, pixel budget included.
            pixels = decode_image(data, max_bytes=MAX_FILE_BYTES, max_pixels=max_pixels).pixels
        else:
            pixels = _decode_other(data, max_pixels)
        return resize_image(
            pixels, height=geometry.height, width=geometry.width, channels=geometry.channels
        )
    except ImageFileError:
        raise
    except DecodeError as exc:
        msg = f"{exc.reason}: {exc.message}"
        raise ImageFileError(msg) from exc
    except Exception as exc:  # noqa: BLE001  Pillow raises many types on corrupt input
        raise ImageFileError(_reason(exc)) from exc


def _decode_other(data: bytes, max_pixels: int) -> np.ndarray:
    """Formats devices do not send (BMP, GIF, WebP, TIFF...): Pillow, first frame."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        if width * height > max_pixels:
            msg = f"image of {width}x{height} pixels, over the limit of {max_pixels:,}"
            raise ImageFileError(msg)
        im.load()
        return _to_array(im)


def load_images(
    files: Sequence[ImageFile], geometry: ImageGeometry, *, threads: int = DECODE_THREADS
) -> tuple[np.ndarray, np.ndarray, list[SkippedFile]]:
    """Decode and fit ``files`` into memory: (uint8 (N, H, W, C), labels, skipped files)."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[SkippedFile] = []
    for file, result in zip(files, map_files(files, geometry, threads=threads), strict=True):
        if isinstance(result, SkippedFile):
            skipped.append(result)
        else:
            images.append(result)
            labels.append(file.label)
    x = np.stack(images) if images else np.zeros((0, *geometry.shape), dtype=np.uint8)
    return x, np.array(labels, dtype=np.int64), skipped


def map_files(
    files: Sequence[ImageFile], geometry: ImageGeometry, *, threads: int = DECODE_THREADS
) -> Iterable[np.ndarray | SkippedFile]:
    """:func:`read_image` of every file in order (a thread pool), a failure as SkippedFile."""

    def one(file: ImageFile) -> np.ndarray | SkippedFile:
        try:
            return read_image(file.path, geometry)
        except ImageFileError as exc:
            return SkippedFile(str(file.path), str(exc))

    if threads <= 1 or len(files) < 8:
        return map(one, files)

    def ordered() -> Iterator[np.ndarray | SkippedFile]:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
            # Bounded look-ahead: at most a few images per thread are decoded and waiting.
            ahead = threads * 4
            pending = deque(pool.submit(one, f) for f in files[:ahead])
            for nxt in files[ahead:]:
                yield pending.popleft().result()
                pending.append(pool.submit(one, nxt))
            while pending:
                yield pending.popleft().result()

    return ordered()
