"""augment_dataset, build_augmenter with Keras layers, placement, and the in-model path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet_tl import augment


@pytest.fixture
def data(rng):
    images = rng.uniform(0, 255, (12, 32, 32, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    return images, labels


def _batches(data, batch_size=4):
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def _collect(ds):
    return [tuple(np.asarray(part) for part in element) for element in ds]


@pytest.mark.parametrize("name", augment.PRESETS)
def test_each_preset_in_tf_data(name, data):
    out = _collect(augment.augment_dataset(_batches(data), name, seed=0))
    images = np.concatenate([element[0] for element in out])
    labels = np.concatenate([element[1] for element in out])
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    if name == "none":
        np.testing.assert_array_equal(images, data[0])
    else:
        assert np.abs(images - data[0]).mean(axis=(1, 2, 3)).min() > 1.0
    if not augment.get_preset(name).has_mixing:
        np.testing.assert_array_equal(labels, data[1])


def test_training_false_returns_the_dataset_unchanged(data):
    ds = _batches(data)
    assert augment.augment_dataset(ds, "heavy", seed=0, training=False) is ds


def test_seed_reproduces_whatever_the_parallelism(data):
    ds = _batches(data)
    runs = [_collect(augment.augment_dataset(ds, "heavy", seed=5, num_parallel_calls=calls))
            for calls in (1, 4, tf.data.AUTOTUNE)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    different = _collect(augment.augment_dataset(ds, "heavy", seed=6))
    assert not np.array_equal(different[0][0], runs[0][0][0])


def test_single_examples_and_images_only(data):
    single = tf.data.Dataset.from_tensor_slices(data[0])
    out = np.stack(list(augment.augment_dataset(single, "medium", seed=1)))
    assert out.shape == (12, 32, 32, 3) and np.abs(out - data[0]).mean() > 1.0
    with pytest.raises(ValueError, match="need batched"):
        augment.augment_dataset(tf.data.Dataset.from_tensor_slices(data), "heavy", seed=0)
    with pytest.raises(ValueError, match="element_spec"):
        augment.augment_dataset(tf.data.Dataset.range(3), "medium", seed=0)


def test_model_placement_only_mixes_in_tf_data(data):
    out = _collect(augment.augment_dataset(_batches(data), "heavy", seed=0, placement="model"))
    images = np.concatenate([element[0] for element in out])
    labels = np.concatenate([element[1] for element in out])
    # Mixed images are convex combinations of the originals: no warp, no colour op happened.
    assert not np.array_equal(labels, data[1])
    light = _collect(augment.augment_dataset(_batches(data), "light", seed=0, placement="model"))
    np.testing.assert_array_equal(np.concatenate([e[0] for e in light]), data[0])
    assert images.shape == data[0].shape


def test_mixing_overrides(data):
    out = _collect(augment.augment_dataset(_batches(data), "medium", seed=0, mixup_alpha=0.4))
    labels = np.concatenate([element[1] for element in out])
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert not np.array_equal(labels, data[1])
    off = _collect(augment.augment_dataset(_batches(data), "heavy", seed=0, mixup_alpha=0,
                                           cutmix_alpha=0))
    np.testing.assert_array_equal(np.concatenate([e[1] for e in off]), data[1])


def test_keras_layer_list(data, tmp_path):
    layers = [keras.layers.RandomFlip("horizontal", seed=1), keras.layers.RandomRotation(0.1, seed=2),
              keras.layers.RandomContrast(0.3, seed=3)]
    augmenter = augment.build_augmenter(layers)
    assert isinstance(augmenter, augment.KerasLayersAugmenter)
    batch = data[0][:4]
    np.testing.assert_array_equal(np.asarray(augmenter(batch)), batch)
    trained = np.asarray(augmenter(batch, training=True))
    assert trained.min() >= 0 and trained.max() <= 255 and np.abs(trained - batch).mean() > 1.0
    out = _collect(augment.augment_dataset(_batches(data), layers, seed=0))
    assert out[0][0].shape == (4, 32, 32, 3) and out[0][0].dtype == np.float32
    # Round trip through .keras, identity at inference.
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, augment.build_augmenter(layers)(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [type(l).__name__ for l in loaded.layers[-1].augment_layers] == [
        "RandomFlip", "RandomRotation", "RandomContrast"]
    np.testing.assert_array_equal(loaded.predict(batch, verbose=0), batch)


def test_in_model_placement_trains_augmented_and_predicts_clean(data):
    inputs = keras.Input((32, 32, 3))
    augmented = augment.build_augmenter("medium", seed=0)(inputs)
    model = keras.Model(inputs, augmented)
    batch = data[0][:4]
    assert np.abs(np.asarray(model(batch, training=True)) - batch).mean() > 1.0
    np.testing.assert_array_equal(np.asarray(model(batch, training=False)), batch)
    np.testing.assert_array_equal(model.predict(batch, verbose=0), batch)


def test_choose_placement():
    assert augment.choose_placement("tpu") == "dataset"
    assert augment.choose_placement("GPU") == "model"
    assert augment.choose_placement("/device:GPU:0") == "model"
    assert augment.choose_placement("cpu") == "dataset"
    assert augment.choose_placement(tf.distribute.OneDeviceStrategy("/cpu:0")) == "dataset"
    expected = "model" if tf.config.list_logical_devices("GPU") else "dataset"
    assert augment.choose_placement() == expected
    with pytest.raises(ValueError, match="'quantum'"):
        augment.choose_placement("quantum")


def test_choose_placement_accepts_the_default_strategy():
    from effnet_tl.augment import choose_placement

    # The default strategy runs where TensorFlow places ops: the GPU when there is one.
    expected = "model" if tf.config.list_logical_devices("GPU") else "dataset"
    assert choose_placement(tf.distribute.get_strategy()) == expected
    # An explicit CPU strategy means the CPU whatever the machine has.
    assert choose_placement(tf.distribute.OneDeviceStrategy("/cpu:0")) == "dataset"


@pytest.mark.parametrize("off", [None, False, "none", "NONE", augment.AugmentSpec()])
def test_augmentation_off_only_casts_and_still_mixes_when_asked(off, data):
    out = _collect(augment.augment_dataset(_batches(data), off, seed=0))
    np.testing.assert_array_equal(np.concatenate([e[0] for e in out]), data[0])
    np.testing.assert_array_equal(np.concatenate([e[1] for e in out]), data[1])
    mixed = _collect(augment.augment_dataset(_batches(data), off, seed=0, mixup_alpha=0.4))
    assert not np.array_equal(np.concatenate([e[1] for e in mixed]), data[1])
    layer = augment.build_augmenter(off)
    assert augment.augmentation_off(layer)
    np.testing.assert_array_equal(np.asarray(layer(data[0][:2], training=True)), data[0][:2])
