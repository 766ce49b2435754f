"""``--augment``: random transforms of the training inputs, as Keras preprocessing layers.

:class:`Augmentation` is the settings object (presets per task, one field per knob);
:func:`augmented` wraps a model for ``fit`` only: ``inputs -> augmentation layers -> model``.
The layers act only when Keras calls them with ``training=True`` (so never on validation
batches), and the model that is saved and exported is the inner one: no augmentation layer
reaches ``model.keras`` or a bundle.

Images are transformed after normalization (the model's input space): flips, rotation, zoom,
translation and shear resample with ``fill_mode="reflect"``, contrast is clipped to the range
normalized pixels can take. Sequences (normalized windows, std ~1 per channel) get Gaussian
jitter and a random gain per window and channel.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from trainer.exceptions import TrainerConfigError

if TYPE_CHECKING:
    import keras

    from stream.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

AugmentPreset = Literal["none", "light", "medium", "strong"]
AUGMENT_PRESETS: tuple[AugmentPreset, ...] = get_args(AugmentPreset)
Flip = Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]
FLIPS: tuple[Flip, ...] = get_args(Flip)

IMAGE_KNOBS = ("flip", "rotation", "zoom", "translate", "shear", "contrast")
SEQUENCE_KNOBS = ("jitter", "scale")
#: Largest value of each numeric knob.
LIMITS = {
    "rotation": 0.5,
    "zoom": 0.9,
    "translate": 0.5,
    "shear": 1.0,
    "contrast": 1.0,
    "jitter": 1.0,
    "scale": 0.9,
}


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """Random transforms applied to training batches; zero / ``"none"`` = off."""

    flip: Flip = "none"
    #: Rotation by up to this fraction of a full turn either way (0.05 = 18 degrees).
    rotation: float = 0.0
    #: Zoom in or out by up to this fraction of the size.
    zoom: float = 0.0
    #: Shift by up to this fraction of the height and width.
    translate: float = 0.0
    #: Shear by up to this factor along both axes.
    shear: float = 0.0
    #: Contrast factor drawn from [1 - contrast, 1 + contrast].
    contrast: float = 0.0
    #: Sequences: Gaussian noise of this std (normalized units: one std of the channel).
    jitter: float = 0.0
    #: Sequences: every window and channel multiplied by a gain from [1 - scale, 1 + scale].
    scale: float = 0.0

    @classmethod
    def preset(cls, name: str, kind: str) -> Augmentation:
        """The preset ``name`` for ``kind`` (``image`` or ``sequence``) data."""
        if name not in AUGMENT_PRESETS:
            msg = f"--augment {name!r}: use one of {', '.join(AUGMENT_PRESETS)}"
            raise TrainerConfigError(msg)
        table = IMAGE_PRESETS if kind == "image" else SEQUENCE_PRESETS
        return table.get(name, cls())

    def with_knobs(self, **knobs: Any) -> Augmentation:
        """This augmentation with the knobs that are not None replaced."""
        return replace(self, **{k: v for k, v in knobs.items() if v is not None})

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) not in (0, 0.0, "none") for f in fields(self))

    def check(self, kind: str) -> Augmentation:
        """Refuse knobs out of range or for the other kind of data; return self."""
        if self.flip not in FLIPS:
            msg = f"--augment-flip {self.flip!r}: use one of {', '.join(FLIPS)}"
            raise TrainerConfigError(msg)
        for name, top in LIMITS.items():
            value = getattr(self, name)
            if not 0 <= value <= top:
                msg = f"--augment-{name} must be between 0 and {top}, got {value}"
                raise TrainerConfigError(msg)
        foreign = SEQUENCE_KNOBS if kind == "image" else IMAGE_KNOBS
        used = [k for k in foreign if getattr(self, k) not in (0, 0.0, "none")]
        if used:
            knobs = ", ".join(f"--augment-{k}" for k in used)
            own = IMAGE_KNOBS if kind == "image" else SEQUENCE_KNOBS
            mine = ", ".join(f"--augment-{k}" for k in own)
            msg = f"{knobs}: not for {kind} data; {kind}s take {mine}"
            raise TrainerConfigError(msg)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def layers(self, *, kind: str, prep: Preprocessing, seed: int) -> list[keras.layers.Layer]:
        """The Keras preprocessing layers of this augmentation (seeded, float32)."""
        import keras

        opts: dict[str, Any] = {"dtype": "float32"}
        out: list[keras.layers.Layer] = []
        if kind == "image":
            reflect = {"fill_mode": "reflect", **opts}
            if self.flip != "none":
                out.append(keras.layers.RandomFlip(self.flip, seed=seed, **opts))
            if self.rotation:
                out.append(keras.layers.RandomRotation(self.rotation, seed=seed + 1, **reflect))
            if self.zoom:
                out.append(keras.layers.RandomZoom(self.zoom, seed=seed + 2, **reflect))
            if self.translate:
                t = self.translate
                out.append(keras.layers.RandomTranslation(t, t, seed=seed + 3, **reflect))
            if self.shear:
                s = self.shear
                out.append(keras.layers.RandomShear(s, s, seed=seed + 4, **reflect))
            if self.contrast:
                out.append(
                    keras.layers.RandomContrast(
                        self.contrast, value_range=normalized_range(prep), seed=seed + 5, **opts
                    )
                )
            return out
        if self.scale:
            from trainer.layers import RandomGain

            out.append(RandomGain(self.scale, seed=seed + 6, **opts))
        if self.jitter:
            out.append(keras.layers.GaussianNoise(self.jitter, seed=seed + 7, **opts))
        return out


IMAGE_PRESETS: dict[str, Augmentation] = {
    "light": Augmentation(rotation=0.03, zoom=0.1, translate=0.1, contrast=0.1),
    "medium": Augmentation(rotation=0.05, zoom=0.15, translate=0.1, shear=0.1, contrast=0.2),
    # Flipping suits photos of objects, not text, digits or signs.
    "strong": Augmentation(
        flip="horizontal", rotation=0.08, zoom=0.2, translate=0.15, shear=0.15, contrast=0.3
    ),
}
SEQUENCE_PRESETS: dict[str, Augmentation] = {
    "light": Augmentation(jitter=0.03, scale=0.1),
    "medium": Augmentation(jitter=0.05, scale=0.2),
    "strong": Augmentation(jitter=0.1, scale=0.3),
}


def normalized_range(prep: Preprocessing) -> tuple[float, float]:
    """The values normalized pixels can take: ``(0 - mean) / std`` .. ``(1 - mean) / std``."""
    mean, std = prep.mean, prep.std
    low = min((0.0 - m) / s for m, s in zip(mean, std, strict=False))
    high = max((1.0 - m) / s for m, s in zip(mean, std, strict=False))
    return float(low), float(high)


def augmented(model: keras.Model, layers: list[keras.layers.Layer]) -> keras.Model:
    """``model`` behind ``layers``, for ``fit`` only (it shares the model's weights)."""
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="input")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_augmented")
