"""The one preprocessing transform shared by the trainer and the agent.

The trainer learns the parameters from its training data and writes them into the
manifest; the agent reads them back and applies exactly the same numpy code, so a model
sees the same numbers at training time and on the device. numpy only: no TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from stream.exceptions import BundleError, DecodeError

ImageColor = Literal["L", "RGB"]
#: Largest window, image side and channel count a manifest may ask for: one input of the
#: largest shape stays within a few hundred MB even at float32.
MAX_DIM = 16_384


def _check_geometry(what: str, sizes: dict[str, int], mean: list[float], std: list[float]) -> None:
    """Raise ValueError unless every size is in [1, MAX_DIM] and mean/std are usable.

    Runs whenever a manifest is parsed (start-up and hot swap alike): a stride of 0 would
    loop forever, a zero std divides by zero.
    """
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
            msg = f"{what} {name} must be an integer in [1, {MAX_DIM}], got {value!r}"
            raise ValueError(msg)
    for name, values in (("mean", mean), ("std", std)):
        if not values or not all(np.isfinite(values)):
            msg = f"{what} {name} must be a non-empty list of finite numbers, got {values!r}"
            raise ValueError(msg)
    if not all(v > 0 for v in std):
        msg = f"{what} std must be > 0, got {std!r}"
        raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class ImagePreprocessing:
    """Decoded image (uint8 HxWxC) -> float32 model input.

    ``x = (resize(img, height, width) / 255 - mean) / std``, per channel.
    """

    kind: Literal["image"] = "image"
    height: int
    width: int
    channels: int
    color: ImageColor = "L"
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        sizes = {"height": self.height, "width": self.width, "channels": self.channels}
        _check_geometry("image", sizes, self.mean, self.std)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Normalize a batch of uint8 images shaped (N, height, width, channels)."""
        if images.ndim != 4 or images.shape[1:] != (self.height, self.width, self.channels):
            msg = (
                f"expected images shaped (N, {self.height}, {self.width}, {self.channels}), "
                f"got {tuple(images.shape)}"
            )
            raise DecodeError("wrong_shape", msg)
        if images.dtype == np.uint8:
            # uint8 pixels take one of 256 values per channel: normalize those 256 with
            # the arithmetic below and look every pixel up (bit-identical, ~5x faster).
            table = self.pixel_table()
            if table is not None:  # else mean/std do not fit the channels: no shortcut
                return self.apply_table(images, table)
        return self._normalize(images)

    def pixel_table(self) -> np.ndarray | None:
        """Per-channel float32 table ``(channels, 256)``: uint8 pixel -> model input.

        ``table[c, v]`` is the arithmetic of :meth:`apply` on the value ``v`` of channel
        ``c``, so a lookup is bit-identical to it. None when mean/std do not fit the
        channels (one value, or one per channel): those broadcast, and have no table.
        """
        values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], self.channels, axis=1)
        table = self._normalize(values).T
        return np.ascontiguousarray(table) if table.shape == (self.channels, 256) else None

    def _normalize(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32)

    def quantization_table(self, scale: float, zero_point: int, dtype: str) -> np.ndarray:
        """Per-channel table ``(channels, 256)``: uint8 pixel -> quantized model input.

        ``table[c, v]`` equals ``quantize(apply(v)[c])``; looking pixels up in it replaces
        the float normalization and the quantization of an integer model's input with
        one gather per channel (bit-identical: the same float32 arithmetic on all 256 values).
        """
        values = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1)
        values = np.repeat(values, self.channels, axis=3).reshape(1, 1, 256, self.channels)
        x = ImagePreprocessing(
            height=1,
            width=256,
            channels=self.channels,
            color=self.color,
            mean=self.mean,
            std=self.std,
        ).apply(values)[0, 0]
        return np.ascontiguousarray(quantize(x, scale, zero_point, dtype).T)

    @staticmethod
    def apply_table(
        images: np.ndarray, table: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Model input for uint8 images (N, H, W, C) via a table ``(channels, 256)`` of
        :meth:`quantization_table` or :meth:`pixel_table`, into ``out`` if given (the
        interpreter's own input tensor: no copy of the batch), else a new array.

        ``np.take`` gathers 2-3x faster than fancy indexing; it runs over
        :data:`GATHER_CHUNK` pixels at a time, so its index buffer stays in the core's
        cache (a whole MobileNet batch at once is ~2x slower). One gather for all channels
        when their rows are equal (the same mean and std for every channel).
        """
        if images.dtype != np.uint8:
            msg = f"a pixel table takes uint8 images, got {images.dtype}"
            raise ValueError(msg)
        if out is None:
            out = np.empty(images.shape, dtype=table.dtype)
        elif out.shape != images.shape:
            msg = f"the model takes inputs shaped {tuple(out.shape)}, got {tuple(images.shape)}"
            raise DecodeError("wrong_shape", msg)
        if out.dtype != table.dtype or not out.flags.c_contiguous:
            msg = f"out must be a C-contiguous {table.dtype} array, got {out.dtype}"
            raise ValueError(msg)
        if table.shape[0] == 1 or (table == table[0]).all():
            _gather(table[0], images.reshape(-1), out.reshape(-1))
            return out
        frames = max(1, GATHER_CHUNK // max(1, int(np.prod(images.shape[1:]))))
        for start in range(0, images.shape[0], frames):
            part = images[start : start + frames]
            for c in range(table.shape[0]):
                out[start : start + frames, ..., c] = np.take(table[c], part[..., c])
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Pixels looked up per ``np.take``: its intp index buffer (8 bytes a pixel) and the
#: output stay within a core's L2 cache.
GATHER_CHUNK = 1 << 15


def _gather(row: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[i] = row[src[i]]`` for flat contiguous uint8 ``src`` into flat contiguous ``dst``.

    One-byte rows go two pixels per lookup where the piece has an even length: a 64K-entry
    table of byte pairs (128 KB, built once per table) halves the gathers. ``mode="clip"``
    never clips (a uint8 or uint16 index is always inside its table); it only spares
    numpy the copy it makes of ``out`` under the default ``mode="raise"``.
    """
    pairs = _pair_table(row) if row.itemsize == 1 else None
    for start in range(0, src.size, GATHER_CHUNK):
        s = src[start : start + GATHER_CHUNK]
        d = dst[start : start + GATHER_CHUNK]
        if pairs is not None and s.size % 2 == 0:
            np.take(pairs, s.view("<u2"), out=d.view("<u2"), mode="clip")
        else:
            np.take(row, s, out=d, mode="clip")


def _pair_table(row: np.ndarray) -> np.ndarray:
    """``row`` (256 one-byte values) as a table indexed by two pixels read as one
    little-endian uint16: entry ``a | b << 8`` holds the bytes ``row[a]``, ``row[b]``."""
    return _pairs_of(row.dtype.str, row.tobytes())  # the key: ~1 us; a batch takes ~1 ms


@lru_cache(maxsize=8)  # a model's table, so a handful at most
def _pairs_of(dtype: str, row_bytes: bytes) -> np.ndarray:
    row = np.frombuffer(row_bytes, dtype=dtype)
    both = np.empty((256, 256, 2), dtype=row.dtype)
    both[:, :, 0] = row[None, :]  # low byte of the index: the first pixel
    both[:, :, 1] = row[:, None]
    pairs = both.reshape(-1).view("<u2").copy()
    pairs.flags.writeable = False  # shared by every caller
    return pairs


@dataclass(frozen=True, kw_only=True)
class SequencePreprocessing:
    """A window of readings (window, channels) -> float32 model input.

    ``x = (window - mean) / std`` per channel. The agent keeps a sliding window per
    device of ``window`` readings and infers every ``stride`` readings once it is full.
    """

    kind: Literal["sequence"] = "sequence"
    window: int
    stride: int
    channels: int
    mean: list[float]
    std: list[float]

    def __post_init__(self) -> None:
        sizes = {"window": self.window, "stride": self.stride, "channels": self.channels}
        _check_geometry("sequence", sizes, self.mean, self.std)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        """Normalize a batch of windows shaped (N, window, channels)."""
        if windows.ndim != 3 or windows.shape[1:] != (self.window, self.channels):
            msg = (
                f"expected windows shaped (N, {self.window}, {self.channels}), "
                f"got {tuple(windows.shape)}"
            )
            raise DecodeError("wrong_shape", msg)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((windows.astype(np.float32) - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Preprocessing = ImagePreprocessing | SequencePreprocessing

#: ITU-R 601-2 luma, as PIL's ``convert("L")``.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def resize_image(pixels: np.ndarray, *, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 (H, W, 1|3) -> uint8 (height, width, channels): the one way images are fitted.

    RGB -> grey by ITU-R 601-2 luma (rounded), grey -> RGB by repeating the channel, then
    Pillow's bilinear resize. The trainer fits every image of a folder with this function
    and the agent every frame (``edge_agent.inputs.fit_image``), so a model sees the same
    pixels in training and on a device.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        msg = f"pixels must be uint8 (H, W, 1|3), got {pixels.dtype} {tuple(pixels.shape)}"
        raise DecodeError("wrong_shape", msg)
    if pixels.shape[2] != channels:
        if channels == 1:
            gray = np.rint(pixels.astype(np.float32) @ _LUMA)
            pixels = np.clip(gray, 0, 255).astype(np.uint8)[:, :, None]
        elif channels == 3:
            pixels = np.repeat(pixels, 3, axis=2)
        else:
            msg = f"the image has {pixels.shape[2]} channel(s); the model takes {channels}"
            raise DecodeError("wrong_shape", msg)
    if pixels.shape[:2] != (height, width):
        from PIL import Image  # lazy: numpy-only callers never load Pillow

        src = pixels[:, :, 0] if channels == 1 else pixels
        im = Image.fromarray(np.ascontiguousarray(src))  # L or RGB from the shape
        out = np.asarray(im.resize((width, height), Image.Resampling.BILINEAR))
        pixels = out[:, :, None] if out.ndim == 2 else out
    return np.ascontiguousarray(pixels)


def preprocessing_from_dict(data: dict[str, Any]) -> Preprocessing:
    """Build the preprocessing object described by a manifest's ``preprocessing`` field."""
    kind = data.get("kind")
    try:
        if kind == "image":
            return ImagePreprocessing(
                height=int(data["height"]),
                width=int(data["width"]),
                channels=int(data["channels"]),
                color=data.get("color", "L"),
                mean=[float(v) for v in data.get("mean", [0.0])],
                std=[float(v) for v in data.get("std", [1.0])],
            )
        if kind == "sequence":
            return SequencePreprocessing(
                window=int(data["window"]),
                stride=int(data["stride"]),
                channels=int(data["channels"]),
                mean=[float(v) for v in data["mean"]],
                std=[float(v) for v in data["std"]],
            )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"manifest 'preprocessing' is malformed ({exc!r}); re-export the bundle"
        raise BundleError(msg) from exc
    msg = f"manifest 'preprocessing.kind' must be 'image' or 'sequence', got {kind!r}"
    raise BundleError(msg)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Float -> integer tensor with the model input's quantization parameters.

    The same arithmetic as the agent's runtime: ``rint(x * (1 / scale)) + zero_point``.
    """
    info = np.iinfo(np.dtype(dtype))
    q = np.rint(x * (1.0 / scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor -> float with the model output's quantization parameters."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
