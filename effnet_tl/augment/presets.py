"""Augmentation presets as data: one frozen spec per preset, every transform named and bounded.

A preset is only numbers; :mod:`effnet_tl.augment.fused` turns a spec into one fused, vectorised
transform per batch, and :mod:`effnet_tl.augment.mix` reads its MixUp/CutMix fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentSpec:
    """Bounds of every transform the fused augmenter can apply; zero or False turns one off.

    Geometric transforms (flips, rotation, shear, translation, zoom, random resized crop and
    RandAugment's geometric ops) are composed into ONE affine matrix per image and resampled once.
    Photometric transforms act on float pixels in [0, 255]; the result is clipped once at the end.

    Attributes:
        horizontal_flip: Mirror left-right with probability 0.5.
        vertical_flip: Mirror top-bottom with probability 0.5 (off in every preset: most photos
            have a sky).
        max_rotation_degrees: Rotation angle drawn uniformly from [-value, value] degrees.
        max_translation_fraction: Shift drawn uniformly from [-value, value] x image width
            (horizontally) and x image height (vertically).
        max_zoom_fraction: Scale drawn uniformly from [1 - value, 1 + value]; > 1 magnifies.
        crop_area_range: Random resized crop: the crop covers this fraction range of the image
            area (Inception-style); ``None`` disables it.
        crop_aspect_range: Random resized crop aspect-ratio bounds (width / height), log-uniform.
        max_brightness_delta: Additive brightness drawn from [-value, value] x 255.
        max_contrast_fraction: Contrast factor drawn from [1 - value, 1 + value], around each
            image's per-channel mean.
        randaugment_num_ops: RandAugment: operations drawn per image (with replacement); 0 = off.
        randaugment_magnitude: RandAugment strength in [0, 1] (fraction of each op's maximum).
        mixup_alpha: MixUp Beta(alpha, alpha) concentration; 0 = off. Needs one-hot labels.
        cutmix_alpha: CutMix Beta(alpha, alpha) concentration; 0 = off. Needs one-hot labels.
        interpolation: "bilinear" or "nearest" resampling of the affine warp.
        fill_mode: "reflect", "nearest" or "constant" (black) outside the source image.
    """

    horizontal_flip: bool = False
    vertical_flip: bool = False
    max_rotation_degrees: float = 0.0
    max_translation_fraction: float = 0.0
    max_zoom_fraction: float = 0.0
    crop_area_range: tuple[float, float] | None = None
    crop_aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
    max_brightness_delta: float = 0.0
    max_contrast_fraction: float = 0.0
    randaugment_num_ops: int = 0
    randaugment_magnitude: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    interpolation: str = "bilinear"
    fill_mode: str = "reflect"

    def __post_init__(self) -> None:
        # Tuples arrive as lists from JSON/get_config; normalise so equality and hashing work.
        if self.crop_area_range is not None:
            object.__setattr__(self, "crop_area_range", tuple(float(v) for v in self.crop_area_range))
        object.__setattr__(self, "crop_aspect_range", tuple(float(v) for v in self.crop_aspect_range))
        _check_range("max_rotation_degrees", self.max_rotation_degrees, 0.0, 180.0)
        _check_range("max_translation_fraction", self.max_translation_fraction, 0.0, 1.0)
        _check_range("max_zoom_fraction", self.max_zoom_fraction, 0.0, 0.9)
        _check_range("max_brightness_delta", self.max_brightness_delta, 0.0, 1.0)
        _check_range("max_contrast_fraction", self.max_contrast_fraction, 0.0, 1.0)
        _check_range("randaugment_magnitude", self.randaugment_magnitude, 0.0, 1.0)
        _check_range("mixup_alpha", self.mixup_alpha, 0.0, 100.0)
        _check_range("cutmix_alpha", self.cutmix_alpha, 0.0, 100.0)
        if int(self.randaugment_num_ops) != self.randaugment_num_ops or self.randaugment_num_ops < 0:
            raise ValueError(
                f"randaugment_num_ops must be a non-negative integer, got {self.randaugment_num_ops!r}"
            )
        if self.crop_area_range is not None:
            low, high = self.crop_area_range
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(
                    f"crop_area_range must satisfy 0 < low <= high <= 1, got {self.crop_area_range!r}"
                )
        low, high = self.crop_aspect_range
        if not 0.0 < low <= high:
            raise ValueError(f"crop_aspect_range must satisfy 0 < low <= high, got {(low, high)!r}")
        if self.interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {self.interpolation!r}"
            )
        if self.fill_mode not in ("reflect", "nearest", "constant"):
            raise ValueError(
                f"fill_mode must be 'reflect', 'nearest' or 'constant', got {self.fill_mode!r}"
            )

    @property
    def has_geometry(self) -> bool:
        """True when any transform moves pixels (so the affine warp must run)."""
        return bool(
            self.horizontal_flip
            or self.vertical_flip
            or self.max_rotation_degrees
            or self.max_translation_fraction
            or self.max_zoom_fraction
            or self.crop_area_range is not None
            or (self.randaugment_num_ops and self.randaugment_magnitude)
        )

    @property
    def has_image_ops(self) -> bool:
        """True when the spec changes images at all (MixUp/CutMix aside)."""
        return bool(
            self.has_geometry
            or self.max_brightness_delta
            or self.max_contrast_fraction
            or (self.randaugment_num_ops and self.randaugment_magnitude)
        )

    @property
    def has_mixing(self) -> bool:
        """True when MixUp or CutMix is on (needs one-hot labels, so it runs in tf.data)."""
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples as lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AugmentSpec":
        """Inverse of :meth:`to_dict`; unknown keys fail with the list of known ones."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AugmentSpec fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= float(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


# Documented transform by transform in README ("Augmentation presets"); keep the two in step.
PRESET_SPECS: dict[str, AugmentSpec] = {
    # Nothing: images pass through as float32.
    "none": AugmentSpec(),
    # Small datasets of well-framed objects: mirror, nudge, slight exposure change.
    "light": AugmentSpec(
        horizontal_flip=True,
        max_translation_fraction=0.05,
        max_zoom_fraction=0.05,
        max_brightness_delta=0.05,
        max_contrast_fraction=0.1,
    ),
    # The default: the keras.io fine-tuning recipe's transforms (flip, rotation, translation,
    # contrast) plus zoom and brightness, fused into one warp per image.
    "medium": AugmentSpec(
        horizontal_flip=True,
        max_rotation_degrees=15.0,
        max_translation_fraction=0.1,
        max_zoom_fraction=0.1,
        max_brightness_delta=0.1,
        max_contrast_fraction=0.1,
        # Bilinear: smoother than nearest and, measured on an idle 2-core machine, also faster
        # through XLA (benchmarks/augment.py: 1,151 vs 817 img/s).
    ),
    # Longer training / larger models: Inception crop, RandAugment, and MixUp or CutMix per image.
    "heavy": AugmentSpec(
        horizontal_flip=True,
        max_rotation_degrees=10.0,
        crop_area_range=(0.25, 1.0),
        max_brightness_delta=0.1,
        max_contrast_fraction=0.2,
        randaugment_num_ops=2,
        randaugment_magnitude=0.5,
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
    ),
}

#: Preset names, mildest first. ``"medium"`` is the default everywhere.
PRESETS: tuple[str, ...] = tuple(PRESET_SPECS)

DEFAULT_PRESET = "medium"


def get_preset(name: str) -> AugmentSpec:
    """Return the spec of preset ``name``.

    Example:
        >>> get_preset("medium").max_rotation_degrees
        15.0
    """
    try:
        return PRESET_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of {list(PRESETS)}") from None


def augmentation_off(augment: Any) -> bool:
    """True when ``augment`` asks for no augmentation at all: the one rule the package uses.

    Off: ``None``, ``False``, ``"none"`` (any case), any preset name or :class:`AugmentSpec`
    (or its dict form, or a layer carrying one in ``.spec``) whose spec changes nothing: no
    image transform and no MixUp/CutMix. Anything else (a working spec, Keras layers, an
    albumentations pipeline) is on.

    Raises:
        ValueError: an unknown preset name (echoed, with the known ones), or a dict that is not
            an :class:`AugmentSpec`.

    Example:
        >>> [augmentation_off(a) for a in (None, False, "None", "medium", AugmentSpec())]
        [True, True, True, False, True]
        >>> augmentation_off(AugmentSpec(mixup_alpha=0.2))   # MixUp alone still augments
        False
    """
    if augment is None or augment is False:
        return True
    if isinstance(augment, str):
        if augment.lower() == "none":
            return True
        augment = get_preset(augment)
    elif isinstance(augment, dict):
        augment = AugmentSpec.from_dict(augment)
    elif isinstance(getattr(augment, "spec", None), AugmentSpec):
        augment = augment.spec  # FusedAugment and anything else carrying a spec
    if isinstance(augment, AugmentSpec):
        return not (augment.has_image_ops or augment.has_mixing)
    return False
