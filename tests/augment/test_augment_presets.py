"""Presets and the fused augmenter: training changes images, inference is the identity,
shapes/dtypes/range hold, seeds reproduce, and the warp matches hand-computed transforms."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet_tl import augment
from effnet_tl.augment.fused import apply_parameters, sample_parameters, warp_affine

ACTIVE = [name for name in augment.PRESETS if name != "none"]


@pytest.fixture
def batch(rng):
    # Smooth gradients + noise: every transform visibly changes such images.
    yy, xx = np.mgrid[0:40, 0:48]
    base = np.stack([xx * 5.0, yy * 6.0, (xx + yy) * 2.5], axis=-1)
    images = base[None] + rng.uniform(0, 15, (4, 40, 48, 3))
    return np.clip(images, 0, 255).astype(np.float32)


def test_preset_names_and_default():
    assert augment.PRESETS == ("none", "light", "medium", "heavy")
    assert augment.DEFAULT_PRESET == "medium"
    with pytest.raises(ValueError, match=r"'strong'.*\['none', 'light', 'medium', 'heavy'\]"):
        augment.get_preset("strong")


def test_spec_validation_echoes_value_and_round_trips():
    with pytest.raises(ValueError, match="max_rotation_degrees.*270"):
        augment.AugmentSpec(max_rotation_degrees=270)
    with pytest.raises(ValueError, match="interpolation.*'cubic'"):
        augment.AugmentSpec(interpolation="cubic")
    with pytest.raises(ValueError, match=r"unknown AugmentSpec fields \['rotation'\]"):
        augment.AugmentSpec.from_dict({"rotation": 3})
    for name in augment.PRESETS:
        spec = augment.get_preset(name)
        assert augment.AugmentSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name", ACTIVE)
def test_preset_changes_images_in_training_and_is_identity_at_inference(name, batch):
    layer = augment.build_augmenter(name, seed=3)
    trained = np.asarray(layer(batch, training=True))
    # Every image of the batch changes (not just one of them).
    per_image_change = np.abs(trained - batch).mean(axis=(1, 2, 3))
    assert np.all(per_image_change > 1.0), per_image_change
    for result in (layer(batch), layer(batch, training=False)):
        np.testing.assert_array_equal(np.asarray(result), batch)


def test_none_preset_is_identity_even_in_training(batch):
    layer = augment.build_augmenter("none")
    np.testing.assert_array_equal(np.asarray(layer(batch, training=True)), batch)


@pytest.mark.parametrize("name", augment.PRESETS)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_shape_dtype_and_range(name, dtype, rng):
    # Extreme pixels (all 0 / all 255 regions) are where brightness/contrast overshoot.
    images = rng.choice([0.0, 255.0, 128.0], size=(3, 33, 37, 3)).astype(dtype)
    out = augment.augment_batch(images, augment.get_preset(name), seed=[1, 2])
    assert out.shape == (3, 33, 37, 3)
    assert out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0


@pytest.mark.parametrize("name", ACTIVE)
def test_fixed_seed_reproduces_exactly(name, batch):
    spec = augment.get_preset(name)
    first = augment.augment_batch(batch, spec, seed=[7, 11]).numpy()
    again = augment.augment_batch(batch, spec, seed=[7, 11]).numpy()
    other = augment.augment_batch(batch, spec, seed=[7, 12]).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 0.5


def test_xla_and_plain_graph_agree(batch):
    spec = dataclasses.replace(augment.get_preset("heavy"), interpolation="bilinear")
    plain = augment.augment_batch(batch, spec, seed=[5, 6]).numpy()
    fused = augment.augment_batch(batch, spec, seed=[5, 6], jit_compile=True).numpy()
    # Posterize/solarize are step functions: a rounding difference can flip a few pixels.
    assert np.mean(np.abs(plain - fused) > 1e-2) < 1e-3


def test_layer_seed_stream_is_reproducible(batch):
    first = augment.build_augmenter("medium", seed=42)
    second = augment.build_augmenter("medium", seed=42)
    np.testing.assert_array_equal(
        np.asarray(first(batch, training=True)), np.asarray(second(batch, training=True))
    )


def _matrix(a00, a01, a02, a10, a11, a12):
    return tf.constant([[a00, a01, a02, a10, a11, a12]], tf.float32)


def test_warp_identity_flip_rotate90_and_shift_match_numpy(batch):
    image = batch[:1, :40, :40]  # square, so a 90-degree rotation keeps the shape
    size = 40
    np.testing.assert_array_equal(warp_affine(image, _matrix(1, 0, 0, 0, 1, 0)).numpy(), image)
    # Horizontal flip: output x reads source x' = (W - 1) - x.
    flipped = warp_affine(image, _matrix(-1, 0, size - 1, 0, 1, 0)).numpy()
    np.testing.assert_allclose(flipped, image[:, :, ::-1], atol=1e-4)
    # Output (y, x) reads source (y', x') = (x, W - 1 - y): np.rot90 counter-clockwise.
    rotated = warp_affine(image, _matrix(0, -1, size - 1, 1, 0, 0)).numpy()
    np.testing.assert_allclose(rotated, np.rot90(image, k=1, axes=(1, 2)), atol=1e-4)
    # Shift right by 3 with a black fill.
    shifted = warp_affine(image, _matrix(1, 0, -3, 0, 1, 0), fill_mode="constant").numpy()
    np.testing.assert_allclose(shifted[:, :, 3:], image[:, :, :-3], atol=1e-4)
    np.testing.assert_array_equal(shifted[:, :, :3], 0.0)
    # Reflect fill mirrors about the edge pixel: column -1 reads column 1.
    reflected = warp_affine(image, _matrix(1, 0, -1, 0, 1, 0), fill_mode="reflect").numpy()
    np.testing.assert_allclose(reflected[:, :, 0], image[:, :, 1], atol=1e-4)


def test_warp_bilinear_half_pixel_is_neighbour_average(batch):
    image = batch[:1]
    half = warp_affine(image, _matrix(1, 0, 0.5, 0, 1, 0)).numpy()
    expected = 0.5 * (image[:, :, :-1] + image[:, :, 1:])
    np.testing.assert_allclose(half[:, :, :-1], expected, atol=1e-3)


def test_flip_only_spec_gives_original_or_mirror(batch):
    spec = augment.AugmentSpec(horizontal_flip=True)
    out = augment.augment_batch(batch, spec, seed=[0, 9]).numpy()
    kinds = []
    for original, result in zip(batch, out):
        if np.allclose(result, original, atol=1e-4):
            kinds.append("same")
        else:
            np.testing.assert_allclose(result, original[:, ::-1], atol=1e-4)
            kinds.append("flipped")
    assert len(kinds) == len(batch)


def test_brightness_and_contrast_are_per_image_affine_maps(batch):
    spec = augment.AugmentSpec(max_brightness_delta=0.1, max_contrast_fraction=0.2)
    images = np.clip(batch * 0.5 + 60, 0, 255).astype(np.float32)  # no clipping happens
    params = sample_parameters(spec, 4, 40, 48, tf.constant([3, 4]))
    out = apply_parameters(tf.constant(images), params, spec).numpy()
    for index in range(4):
        mean = images[index].mean(axis=(0, 1))
        factor = float(params["contrast"][index])
        delta = float(params["brightness"][index])
        assert 0.8 <= factor <= 1.2 and abs(delta) <= 25.5
        expected = (images[index] - mean) * factor + mean + delta
        np.testing.assert_allclose(out[index], expected, atol=1e-3)


def test_fused_layer_serialises_and_stays_identity_in_a_saved_model(batch, tmp_path):
    inputs = keras.Input((40, 48, 3))
    outputs = augment.build_augmenter("heavy", seed=1)(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "augment.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[-1]
    assert isinstance(layer, augment.FusedAugment)
    assert layer.spec == augment.get_preset("heavy") and layer.get_config()["spec"] == "heavy"
    np.testing.assert_array_equal(loaded.predict(batch, verbose=0), batch)
    custom = augment.FusedAugment(augment.AugmentSpec(max_zoom_fraction=0.2), seed=5)
    clone = augment.FusedAugment.from_config(custom.get_config())
    assert clone.spec == custom.spec and clone.seed == 5


@pytest.mark.parametrize("value,off", [
    (None, True), (False, True), ("none", True), ("None", True), ("NONE", True),
    (augment.AugmentSpec(), True),
    # Fields that only bound other transforms change nothing on their own.
    (augment.AugmentSpec(crop_aspect_range=(0.5, 2.0), fill_mode="constant"), True),
    ({"horizontal_flip": False}, True),
    ("light", False), ("medium", False), ("heavy", False),
    (augment.AugmentSpec(horizontal_flip=True), False),
    (augment.AugmentSpec(mixup_alpha=0.2), False),  # MixUp alone still augments
    (augment.AugmentSpec(randaugment_num_ops=2, randaugment_magnitude=0.5), False),
    ([keras.layers.RandomFlip()], False),
])
def test_augmentation_off_is_one_rule(value, off):
    assert augment.augmentation_off(value) is off


def test_augmentation_off_reads_a_layers_spec_and_rejects_unknown_names():
    assert augment.augmentation_off(augment.FusedAugment("none"))
    assert not augment.augmentation_off(augment.FusedAugment("light"))
    # Every preset but "none" augments: the rule and the preset table agree.
    assert [augment.augmentation_off(name) for name in augment.PRESETS] == [
        name == "none" for name in augment.PRESETS]
    with pytest.raises(ValueError, match=r"'medum'.*\['none', 'light', 'medium', 'heavy'\]"):
        augment.augmentation_off("medum")
