"""Recipe defaults adapt to dataset size and variant; run-folder helpers; pixel-range guard."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet_tl.train.recipe import (
    default_batch_size,
    default_finetune_epochs,
    default_unfreeze_blocks,
    resolve_settings,
)
from effnet_tl.train.run import default_run_name, looks_unit_range, prepare_images

GIVEN = dict(
    variant="lite0", weights="imagenet", image_size=None, batch_size=None, head_epochs=None,
    finetune_epochs=None, unfreeze_blocks="auto", head_lr=None, finetune_lr=None,
    warmup_fraction=0.1, weight_decay=1e-2, label_smoothing=0.1, dropout_rate=None,
    drop_path_rate=0.2, extra_blocks=0, augment="medium", resize="center_crop",
    cache_features="auto", finetune_views="auto", val_fraction=0.2, seed=0, patience="auto", monitor="val_accuracy",
    mixed_precision="auto", fix_pixel_range=True,
)


def _settings(num_train, **overrides):
    return resolve_settings(num_train=num_train, num_blocks=16, replicas=1,
                            strategy=tf.distribute.get_strategy(), **{**GIVEN, **overrides})


def test_defaults_adapt_to_dataset_size_and_variant():
    small, large = _settings(500), _settings(100_000)
    assert small.image_size == (224, 224)  # lite0's resolution
    assert small.dropout_rate == pytest.approx(0.2)
    assert small.finetune_epochs > large.finetune_epochs
    assert small.unfreeze_blocks < large.unfreeze_blocks <= 16
    assert small.batch_size == 32 and _settings(100).batch_size == 16
    assert small.finetune_lr < small.head_lr / 5  # a much lower rate for fine-tuning
    assert small.cache_features and small.mixed_precision == "float32"
    # ~400 head steps on cached features: more epochs for fewer images.
    assert small.head_epochs == 25 and large.head_epochs == 10  # 500 / 32 -> 16 steps


def test_every_knob_is_overridable():
    s = _settings(500, batch_size=8, head_epochs=2, finetune_epochs=1, unfreeze_blocks="block6a",
                  head_lr=0.1, finetune_lr=0.01, image_size=(48, 64), cache_features=False,
                  patience=None)
    assert (s.batch_size, s.head_epochs, s.finetune_epochs, s.unfreeze_blocks) == (8, 2, 1, "block6a")
    assert (s.head_lr, s.finetune_lr, s.image_size, s.cache_features, s.patience) == (
        0.1, 0.01, (48, 64), False, None)
    assert s.to_dict()["image_size"] == [48, 64]


def test_default_helpers_are_monotone():
    sizes = [100, 1_000, 5_000, 50_000, 500_000]
    epochs = [default_finetune_epochs(n) for n in sizes]
    assert epochs == sorted(epochs, reverse=True)
    blocks = [default_unfreeze_blocks(n, 16) for n in sizes]
    assert blocks == sorted(blocks) and blocks[0] == 2 and blocks[-1] == 8
    assert default_batch_size(1000, replicas=4) == 128


def test_run_name_is_stable():
    assert default_run_name("/data/flowers/", "b0") == "flowers-b0"
    assert default_run_name("tfds:tf_flowers", "lite0") == "tf_flowers-lite0"


def test_unit_range_guard_rescales_with_an_explanation():
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    assert looks_unit_range(images) and not looks_unit_range(images * 255)
    with pytest.warns(UserWarning, match=r"\[0, 255\]"):
        out = prepare_images(images, (32, 32))
    np.testing.assert_allclose(out, images * 255, rtol=1e-6)


def test_prepare_images_converts_gray_and_resizes():
    gray = np.full((16, 24), 200, np.uint8)  # wider than tall: centre crop to square first
    out = prepare_images(gray, (8, 8))
    assert out.shape == (1, 8, 8, 3) and np.allclose(out, 200.0)


class _Scores(keras.callbacks.Callback):
    """Sets logs["score"] from a fixed sequence (before the checkpoint reads it); records the
    weights of every epoch; raises to stand in for a kill after ``kill_after``."""

    def __init__(self, scores, kill_after=None):
        super().__init__()
        self.scores, self.kill_after, self.weights = scores, kill_after, {}

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.weights[epoch] = [np.array(w) for w in self.model.weights]


class _Kill(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise RuntimeError("killed")


def test_cached_phase_checkpoint_survives_a_kill_between_its_best_epoch_and_the_end(tmp_path):
    from effnet_tl.train.recipe import _SaveFullModel

    def model():
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        net.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
        return net

    def saver(net, threshold=None):
        return _SaveFullModel(net, best_weights=tmp_path / "backup" / "head-best.npz",
                              filepath=str(tmp_path / "model.keras"), monitor="score",
                              mode="max", save_best_only=True, initial_value_threshold=threshold)

    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(16) % 2]
    first = model()
    scores = _Scores([0.5, 0.9, 0.6, 0.7])
    with pytest.raises(RuntimeError, match="killed"):  # killed after epoch 2: best was epoch 1
        first.fit(x, y, epochs=4, verbose=0, callbacks=[scores, saver(first), _Kill(after=2)])
    assert not (tmp_path / "model.keras").exists()  # the kill came before the phase's end

    rerun = model()  # a fresh process: other weights in memory
    rerun.fit(x, y, epochs=4, initial_epoch=3, verbose=0,
              callbacks=[_Scores([0.5, 0.9, 0.6, 0.7]), saver(rerun, threshold=0.9)])
    written = keras.saving.load_model(tmp_path / "model.keras")
    for got, want in zip(written.get_weights(), scores.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_finetune_caches_views_only_when_augmentation_survives():
    from effnet_tl.classifier import build_classifier, finetune_boundary
    from effnet_tl.models import custom_variant
    from effnet_tl.train.feature_cache import feature_bytes
    from effnet_tl.train.recipe import _finetune_views

    tiny = custom_variant(width=0.25, depth=0.25, resolution=32, name="tiny")
    model = build_classifier(3, variant=tiny, weights=None)
    boundary = finetune_boundary(model, 1)
    per_image = feature_bytes(model.get_layer("backbone").get_layer(boundary).input.shape[1:], 1)

    def views(budget_images, **overrides):
        settings = _settings(100, finetune_epochs=8, image_size=32, **overrides)
        return _finetune_views(settings, model, boundary, None, 100, 10,
                               budget=per_image * budget_images)

    assert views(1_000) == 4  # auto: half of 8 epochs
    assert views(1_000, finetune_views=8) == 8
    assert views(310) == 3  # three of the four wanted views (and validation) fit
    assert views(150) == 0  # only the plain view fits: no cache rather than no augmentation
    assert views(150, augment="none") == 1
    assert views(1_000, finetune_views=0) == 0
    assert _finetune_views(_settings(100), model, finetune_boundary(model, "all"), None, 100, 10) == 0


def test_validation_batches_split_evenly_over_replicas():
    from effnet_tl.train.recipe import validation_batch_size

    assert validation_batch_size(32, 100, 1) == 32
    assert validation_batch_size(32, 100, 4) == 32
    assert validation_batch_size(32, 13, 4) == 12
    with pytest.raises(ValueError, match="3 images, fewer than the 4 replicas"):
        validation_batch_size(32, 3, 4)
