"""Our MBConv/FusedMBConv/SE/DropPath layers: behaviour, config and safe_mode round trips."""

import numpy as np
import pytest

import keras

from effnet_tl.layers import DropPath, FusedMBConv, ImageNormalization, MBConv, SqueezeExcite


def _roundtrip(layer, x, tmp_path):
    """Save a one-layer model as .keras, reload with safe_mode=True, compare outputs."""
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "layer.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    return reloaded


@pytest.mark.parametrize(
    "layer",
    [
        MBConv(filters_in=8, filters_out=8, expand_ratio=4, se_ratio=0.25, drop_path_rate=0.1),
        MBConv(filters_in=8, filters_out=16, kernel_size=5, strides=2, expand_ratio=6),
        FusedMBConv(filters_in=8, filters_out=8, expand_ratio=1),
        FusedMBConv(filters_in=8, filters_out=16, strides=2, expand_ratio=4, se_ratio=0.25),
        SqueezeExcite(filters=8, se_filters=2),
        DropPath(drop_rate=0.3),
        ImageNormalization(statistics_as_weights=True),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_and_keras_file_roundtrip(layer, tmp_path, rng):
    x = rng.uniform(0, 255, (2, 16, 16, 8 if not isinstance(layer, ImageNormalization) else 3))
    x = x.astype("float32")
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    _roundtrip(layer, x, tmp_path)


def test_mbconv_matches_hand_computation_without_expansion(rng):
    """expand_ratio=1, no SE, no residual: BN(pointwise(act(BN(depthwise(x)))))."""
    block = MBConv(filters_in=2, filters_out=3, kernel_size=1, expand_ratio=1, activation="relu")
    x = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    block(x)
    depthwise = np.array([2.0, -1.0], "float32").reshape(1, 1, 2, 1)
    pointwise = rng.normal(size=(1, 1, 2, 3)).astype("float32")
    block.dwconv.set_weights([depthwise])
    block.project_conv.set_weights([pointwise])
    eps = block.bn_epsilon
    hidden = np.maximum(x * depthwise.reshape(2) / np.sqrt(1 + eps), 0)
    expected = hidden @ pointwise.reshape(2, 3) / np.sqrt(1 + eps)
    np.testing.assert_allclose(block(x, training=False), expected, rtol=1e-5, atol=1e-6)


def test_residual_only_when_shapes_match():
    assert MBConv(filters_in=8, filters_out=8).has_residual
    assert not MBConv(filters_in=8, filters_out=8, strides=2).has_residual
    assert not MBConv(filters_in=8, filters_out=16).has_residual


def test_residual_branch_is_added(rng):
    block = MBConv(filters_in=4, filters_out=4, expand_ratio=2)
    x = rng.normal(size=(1, 5, 5, 4)).astype("float32")
    block(x)
    block.project_bn.set_weights([np.zeros(4, "float32")] * 2 + [np.zeros(4), np.ones(4)])
    # With the projection zeroed the block is exactly the identity (residual only).
    np.testing.assert_allclose(block(x, training=False), x, atol=1e-6)


def test_squeeze_excite_gates_channels(rng):
    se = SqueezeExcite(filters=3, se_filters=1, activation="relu")
    x = rng.uniform(0, 1, (1, 4, 4, 3)).astype("float32")
    se(x)
    se.reduce.set_weights([np.ones((1, 1, 3, 1), "float32"), np.zeros(1, "float32")])
    se.expand.set_weights([np.array([[[[0.0, 1.0, -1.0]]]], "float32"), np.zeros(3, "float32")])
    pooled = x.mean(axis=(1, 2)).sum()
    gates = 1 / (1 + np.exp(-np.array([0.0, pooled, -pooled])))
    np.testing.assert_allclose(se(x), x * gates, rtol=1e-5)


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    layer = DropPath(drop_rate=0.25, seed=3)
    x = np.ones((4000, 2, 2, 3), "float32")
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    # Every sample is either fully dropped or fully kept and rescaled by 1/(1-p).
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.75], rtol=1e-6)
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(layer(x, training=False), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters_in": 0, "filters_out": 8}, "filters_in=0"),
        ({"filters_in": 8, "filters_out": 8, "kernel_size": 4}, "kernel_size=4"),
        ({"filters_in": 8, "filters_out": 8, "strides": 3}, "strides=3"),
        ({"filters_in": 8, "filters_out": 8, "se_ratio": 1.5}, "se_ratio=1.5"),
    ],
)
def test_bad_block_arguments_echo_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MBConv(**kwargs)


def test_bad_drop_rate_echoes_value():
    with pytest.raises(ValueError, match="drop_rate=1.0"):
        DropPath(drop_rate=1.0)
