"""build_classifier: the head's layout and dtype, BN-frozen fine-tuning, the cached-feature head."""

import numpy as np
import keras
import pytest

from effnet_tl.classifier import backbone_blocks, build_classifier, target_loss
from effnet_tl.train.surgery import (
    feature_model,
    finetune_boundary,
    freeze_backbone,
    frozen_bottom,
    head_model,
    set_finetune_trainable,
)
from effnet_tl.models import custom_variant

TINY = custom_variant(width=0.25, depth=0.25, resolution=32, name="tiny")


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_layout_and_softmax_probabilities():
    model = build_classifier(3, variant=TINY, weights=None, dropout_rate=0.3)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "backbone", "head_pool", "head_dropout", "predictions"]
    assert model.get_layer("head_dropout").rate == 0.3
    probs = keras.ops.convert_to_numpy(model(_images()))
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # Zero-initialised kernel (and bias): the untrained head predicts the uniform distribution.
    np.testing.assert_allclose(probs, 1 / 3, rtol=1e-5)


def test_variant_dropout_is_default_and_two_classes_stay_softmax():
    model = build_classifier(2, variant="lite0", weights=None, image_size=32)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.2)  # lite0's rate
    assert model.output_shape == (None, 2)
    assert model.get_layer("predictions").activation.__name__ == "softmax"


def test_float32_output_under_mixed_precision():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_classifier(3, variant=TINY, weights=None)
        out = model(_images(2))
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    assert model.get_layer("backbone").get_layer("top_conv").compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


@pytest.mark.parametrize("bad", [1, 0, True, 2.0])
def test_rejects_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier(bad, variant=TINY, weights=None)


def test_target_loss_label_smoothing_matches_hand_computation():
    loss = target_loss(0.1)
    y_true = np.array([[0.0, 1.0]], "float32")
    y_pred = np.array([[0.25, 0.75]], "float32")
    # Smoothed target: [0.05, 0.95].
    expected = -(0.05 * np.log(0.25) + 0.95 * np.log(0.75))
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        target_loss(1.0)


def test_extra_blocks_are_our_mbconv_layers():
    from effnet_tl.layers import MBConv

    model = build_classifier(3, variant=TINY, weights=None, extra_blocks=2)
    extra = [layer for layer in model.layers if layer.name.startswith("extra_block")]
    assert [layer.name for layer in extra] == ["extra_block1", "extra_block2"]
    assert all(isinstance(layer, MBConv) for layer in extra)
    assert model(_images(2)).shape == (2, 3)


def test_finetune_unfreezes_top_whole_blocks_and_keeps_batchnorm_frozen():
    model = build_classifier(3, variant=TINY, weights=None)
    blocks = backbone_blocks(model)
    unfrozen = set_finetune_trainable(model, 2)
    assert unfrozen == [blocks[-2], blocks[-1], "top_conv"]
    base = model.get_layer("backbone")
    batch_norms = [layer for layer in model._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert set_finetune_trainable(model, blocks[-1]) == [blocks[-1], "top_conv"]

    # One real optimisation step: frozen blocks and every BN statistic stay bit-identical,
    # the unfrozen top block moves.
    # A non-zero head, as after the head phase (a zero kernel passes no gradient down).
    dense = model.get_layer("predictions")
    dense.set_weights([np.random.default_rng(0).normal(size=w.shape).astype("float32")
                       for w in dense.get_weights()])
    set_finetune_trainable(model, 1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=target_loss(), metrics=["accuracy"])
    before = {v.path: v.numpy().copy() for v in model.variables}
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    model.fit(_images(), y, epochs=1, batch_size=4, verbose=0)
    after = {v.path: v.numpy() for v in model.variables}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert any(blocks[-1] in path for path in changed)
    assert any("predictions" in path for path in changed)
    assert not any(blocks[-2] in path or "stem" in path for path in changed)
    assert not any("moving_" in path for path in changed)
    assert base.get_layer(blocks[0]).trainable is False


def test_head_on_cached_features_equals_full_model():
    model = build_classifier(3, variant=TINY, weights=None)
    model.get_layer("predictions").set_weights(
        [np.random.default_rng(1).normal(size=w.shape).astype("float32")
         for w in model.get_layer("predictions").get_weights()]
    )
    freeze_backbone(model)
    images = _images(3)
    features = feature_model(model)(images, training=False)
    head = head_model(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head(features, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
        rtol=1e-5, atol=1e-6,
    )
    # Shared layers: training the head trains the classifier's own Dense layer.
    assert head.get_layer("predictions") is model.get_layer("predictions")


@pytest.mark.parametrize("extra_blocks", [0, 1])
def test_split_at_the_finetune_boundary_equals_the_full_model(extra_blocks):
    model = build_classifier(3, variant=TINY, weights=None, extra_blocks=extra_blocks)
    dense = model.get_layer("predictions")
    dense.set_weights([np.random.default_rng(2).normal(size=w.shape).astype("float32")
                       for w in dense.get_weights()])
    images = _images(3)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    blocks = backbone_blocks(model)
    for unfreeze in (0, 1, 2, "all"):
        boundary = finetune_boundary(model, unfreeze)
        below = frozen_bottom(model, boundary)(images, training=False)
        top = head_model(model, boundary)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(top(below, training=False)),
                                   expected, rtol=1e-5, atol=1e-6, err_msg=str(unfreeze))
        # The head phase's input computed from the cached maps instead of the images.
        if boundary is not None:
            pooled = feature_model(model, boundary)(below, training=False)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(pooled),
                keras.ops.convert_to_numpy(feature_model(model)(images, training=False)),
                rtol=1e-5, atol=1e-6)
    assert finetune_boundary(model, 0) is None
    assert finetune_boundary(model, 2) == blocks[-2]
    assert finetune_boundary(model, "all") == "normalization"
    # The split's top trains the classifier's own unfrozen layers.
    top = head_model(model, blocks[-1])
    assert top.get_layer(blocks[-1]) is model.get_layer("backbone").get_layer(blocks[-1])
    with pytest.raises(ValueError, match="unfreeze_blocks=99"):
        finetune_boundary(model, 99)


def test_save_and_reload_safe_mode(tmp_path):
    model = build_classifier(3, variant=TINY, weights=None, extra_blocks=1)
    head_model(model)  # extra nodes on shared layers must not leak into the saved graph
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = _images(2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(model(images))
    )
