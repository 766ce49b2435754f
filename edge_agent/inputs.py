"""Turn decoded input messages into what the model's preprocessing expects.

Images (PNG/JPEG) are converted to the model's colour (gray <-> RGB) and resized to its
height x width (bilinear), as ``ImagePreprocessing`` documents. A raw ``.npy`` tensor is
taken as it is: it must already have the model's (height, width, channels), else it is a
``wrong_shape`` dead letter.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from stream.exceptions import DecodeError
from stream.preprocessing import ImagePreprocessing

NPY = "application/x-npy"
#: ITU-R 601-2 luma, as PIL's ``convert("L")``.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def fit_image(pixels: np.ndarray, content_type: str, prep: ImagePreprocessing) -> np.ndarray:
    """uint8 (H, W, 1|3) -> uint8 (prep.height, prep.width, prep.channels)."""
    want = (prep.height, prep.width, prep.channels)
    if pixels.shape == want:
        return pixels
    if content_type == NPY:
        msg = (
            f"the raw .npy tensor has shape {tuple(pixels.shape)} but the model takes {want}; "
            "send it at the model's size or send PNG/JPEG (those are resized)"
        )
        raise DecodeError("wrong_shape", msg)
    channels = pixels.shape[2]
    if channels != prep.channels:
        if prep.channels == 1 and channels == 3:
            gray = np.rint(pixels.astype(np.float32) @ _LUMA)
            pixels = np.clip(gray, 0, 255).astype(np.uint8)[:, :, None]
        elif prep.channels == 3 and channels == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        else:
            msg = f"the image has {channels} channel(s); the model takes {prep.channels}"
            raise DecodeError("wrong_shape", msg)
    if pixels.shape[:2] != (prep.height, prep.width):
        src = pixels[:, :, 0] if prep.channels == 1 else pixels
        im = Image.fromarray(np.ascontiguousarray(src))  # L or RGB from the shape
        out = np.asarray(im.resize((prep.width, prep.height), Image.Resampling.BILINEAR))
        pixels = out[:, :, None] if out.ndim == 2 else out
    return np.ascontiguousarray(pixels)
