"""MixUp / CutMix: label rows sum to 1, and the labels match the pixels that were mixed."""

import numpy as np
import pytest
import tensorflow as tf

from effnet_tl import augment


def _black_and_white(batch_size=8, size=24):
    # Even images black (class 0), odd images white (class 1): the fraction of "white" in any
    # mixed pixel equals its class-1 label mass, which is an independent check of the weights.
    colour = np.arange(batch_size) % 2
    images = np.broadcast_to(colour[:, None, None, None] * 255.0, (batch_size, size, size, 3))
    labels = np.eye(2, dtype=np.float32)[colour]
    return images.astype(np.float32), labels


@pytest.mark.parametrize(
    "mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0), (0.2, 1.0)], ids=["mixup", "cutmix", "both"]
)
def test_label_rows_sum_to_one_and_match_pixel_mass(mixup_alpha, cutmix_alpha):
    images, labels = _black_and_white()
    mixed, mixed_labels = augment.mix_batch(
        images, labels, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, seed=(3, 4)
    )
    mixed, mixed_labels = mixed.numpy(), mixed_labels.numpy()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    assert mixed.dtype == np.float32 and mixed.min() >= 0.0 and mixed.max() <= 255.0
    white_mass = mixed.mean(axis=(1, 2, 3)) / 255.0
    np.testing.assert_allclose(white_mass, mixed_labels[:, 1], atol=1e-5)
    assert not np.allclose(mixed_labels, labels)  # something was actually mixed


def test_cutmix_pastes_a_rectangle():
    images, labels = _black_and_white()
    mixed, _ = augment.mix_batch(images, labels, cutmix_alpha=1.0, seed=(0, 1))
    pasted_any = False
    for image, original in zip(mixed.numpy(), images):
        assert set(np.unique(image).tolist()) <= {0.0, 255.0}  # pasted, not blended
        # The pixels that changed form one filled rectangle.
        rows, cols = np.nonzero(image[..., 0] != original[..., 0])
        if rows.size:
            pasted_any = True
            box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1, 0]
            assert np.all(box != original[0, 0, 0])
    assert pasted_any


def test_mix_is_reproducible_and_seed_sensitive():
    images, labels = _black_and_white()
    first = augment.mix_batch(images, labels, mixup_alpha=0.4, cutmix_alpha=1.0, seed=(5, 5))
    again = augment.mix_batch(images, labels, mixup_alpha=0.4, cutmix_alpha=1.0, seed=(5, 5))
    other = augment.mix_batch(images, labels, mixup_alpha=0.4, cutmix_alpha=1.0, seed=(5, 6))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(first[1].numpy(), other[1].numpy())


def test_mix_off_returns_inputs_and_sparse_labels_fail():
    images, labels = _black_and_white()
    out_images, out_labels = augment.mix_batch(images, labels, seed=(0, 0))
    np.testing.assert_array_equal(out_images.numpy(), images)
    np.testing.assert_array_equal(out_labels.numpy(), labels)
    with pytest.raises(ValueError, match=r"one-hot float labels.*shape \(8,\).*int64"):
        augment.mix_batch(images, tf.constant(np.arange(8)), mixup_alpha=0.2, seed=(0, 0))
