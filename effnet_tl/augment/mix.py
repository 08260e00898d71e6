"""MixUp and CutMix on a batch: images and their one-hot labels mixed with a partner image.

They need the one-hot labels of the target block, which a model's input layer never sees, so
they always run in tf.data (after batching), whatever the placement of the image transforms.
"""

from __future__ import annotations

import tensorflow as tf


def _beta(shape: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    # Beta(a, a) = G1 / (G1 + G2) with G ~ Gamma(a): the stateless way to draw it.
    seed_a = tf.random.experimental.stateless_fold_in(seed, 11)
    seed_b = tf.random.experimental.stateless_fold_in(seed, 12)
    gamma_a = tf.random.stateless_gamma(shape, seed=seed_a, alpha=alpha)
    gamma_b = tf.random.stateless_gamma(shape, seed=seed_b, alpha=alpha)
    return gamma_a / tf.maximum(gamma_a + gamma_b, 1e-12)


def _check_labels(images: tf.Tensor, labels: tf.Tensor) -> None:
    if images.shape.rank != 4:
        raise ValueError(
            f"mix_batch needs a batch of images (B, H, W, C); got shape {images.shape}. "
            "Batch the dataset before MixUp/CutMix."
        )
    if labels.shape.rank != 2 or not labels.dtype.is_floating:
        raise ValueError(
            f"MixUp/CutMix need one-hot float labels of shape (B, num_classes); got shape "
            f"{labels.shape} and dtype {labels.dtype.name}. Use one-hot labels "
            "(effnet_tl.data.make_dataset does) or turn mixing off."
        )


def mix_batch(images: tf.Tensor, labels: tf.Tensor, *, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, seed: tf.Tensor | tuple[int, int] = (0, 0),
              switch_probability: float = 0.5) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix each image with a random partner of the same batch (MixUp or CutMix per image).

    Each image draws its own mixing weight ``lam ~ Beta(alpha, alpha)`` and its partner from a
    random permutation of the batch. MixUp blends whole images; CutMix pastes a box of the
    partner covering ``1 - lam`` of the area (the box is clipped at the border, and ``lam`` is
    recomputed from the clipped box so that the labels match the pixels exactly). With both
    alphas > 0, each image uses CutMix with probability ``switch_probability`` (timm's policy).
    Labels become ``lam * own + (1 - lam) * partner``, so rows that summed to 1 still do.

    Args:
        images: float [B, H, W, C], pixels in [0, 255].
        labels: one-hot float [B, num_classes].
        mixup_alpha: MixUp Beta concentration; 0 turns MixUp off.
        cutmix_alpha: CutMix Beta concentration; 0 turns CutMix off.
        seed: Stateless seed, shape [2]; equal seeds give equal outputs.
        switch_probability: Chance of CutMix (rather than MixUp) when both are on.

    Returns:
        ``(images, labels)``: float32 [B, H, W, C] in [0, 255] and float32 [B, num_classes].

    Example:
        >>> import numpy as np
        >>> images = np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), 255.0)]).astype("float32")
        >>> labels = np.eye(2, dtype="float32")
        >>> _, mixed = mix_batch(images, labels, mixup_alpha=0.4, seed=(1, 2))
        >>> np.allclose(mixed.numpy().sum(axis=1), 1.0)
        True
    """
    images = tf.convert_to_tensor(images)
    labels = tf.convert_to_tensor(labels)
    _check_labels(images, labels)
    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be >= 0, got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
    if not mixup_alpha and not cutmix_alpha:
        return images, labels

    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    # Partner = a random permutation (argsort of uniform keys is stateless and vectorised).
    keys = tf.random.stateless_uniform([batch], seed=tf.random.experimental.stateless_fold_in(seed, 10))
    partner = tf.argsort(keys)
    partner_images = tf.gather(images, partner)
    partner_labels = tf.gather(labels, partner)

    if mixup_alpha and cutmix_alpha:
        use_cutmix = tf.random.stateless_uniform(
            [batch], seed=tf.random.experimental.stateless_fold_in(seed, 13)
        ) < switch_probability
    else:
        use_cutmix = tf.fill([batch], bool(cutmix_alpha))

    # MixUp weight (per image).
    lam_mixup = _beta([batch], float(mixup_alpha), seed) if mixup_alpha else tf.ones([batch])

    # CutMix box (per image): area 1 - lam, centre uniform, clipped to the image.
    if cutmix_alpha:
        lam_cut = _beta([batch], float(cutmix_alpha), tf.random.experimental.stateless_fold_in(seed, 14))
        centre = tf.random.stateless_uniform([batch, 2], seed=tf.random.experimental.stateless_fold_in(seed, 15))
        h = tf.cast(height, tf.float32)
        w = tf.cast(width, tf.float32)
        cut = tf.sqrt(1.0 - lam_cut)
        y0 = tf.round(tf.clip_by_value(centre[:, 0] * h - cut * h / 2, 0.0, h))
        y1 = tf.round(tf.clip_by_value(centre[:, 0] * h + cut * h / 2, 0.0, h))
        x0 = tf.round(tf.clip_by_value(centre[:, 1] * w - cut * w / 2, 0.0, w))
        x1 = tf.round(tf.clip_by_value(centre[:, 1] * w + cut * w / 2, 0.0, w))
        rows = tf.range(h)[None, :, None]
        cols = tf.range(w)[None, None, :]
        in_box = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
                  & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
        # The label weight is the exact fraction of own pixels left after clipping/rounding.
        lam_cut = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        cut_mask = tf.cast(in_box, tf.float32)[..., None]
    else:
        lam_cut = tf.ones([batch])
        cut_mask = tf.zeros([1, 1, 1, 1])

    lam = tf.where(use_cutmix, lam_cut, lam_mixup)
    # Per pixel: weight of the partner image. MixUp: 1 - lam everywhere; CutMix: the box.
    partner_weight = tf.where(
        use_cutmix[:, None, None, None], cut_mask, (1.0 - lam_mixup)[:, None, None, None]
    )
    mixed_images = images + partner_weight * (partner_images - images)
    mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * partner_labels
    return tf.clip_by_value(mixed_images, 0.0, 255.0), mixed_labels
