"""Cached frozen-layer outputs: the view schedule, the memory rule and one trace per model."""

import numpy as np
import pytest
import tensorflow as tf

from effnet_tl.train.feature_cache import (
    feature_bytes,
    inference_function,
    run_over,
    views_dataset,
    views_that_fit,
)


def _views(count, size=10):
    labels = np.eye(size, dtype="float32")
    return [(np.stack([np.full(3, 100 * v + i, "float32") for i in range(size)]), labels)
            for v in range(count)]


def test_epoch_e_reads_view_e_mod_k_each_example_once_reshuffled():
    views = _views(3)
    ds = views_dataset(views, batch_size=4, seed=0)
    steps = 3  # ceil(10 / 4); no batch mixes two views
    batches = list(ds.take(steps * 6))
    epochs = [np.concatenate([x[:, 0] for x, _ in batches[e * steps:(e + 1) * steps]])
              for e in range(6)]
    for e, values in enumerate(epochs):
        assert sorted(values) == [100 * (e % 3) + i for i in range(10)]
        labels = np.concatenate([y for _, y in batches[e * steps:(e + 1) * steps]]).argmax(1)
        np.testing.assert_array_equal(labels, values.astype(int) % 100)  # pairs stay together
    assert list(epochs[0]) != list(epochs[3])  # view 0 again, in a new order


def test_a_resumed_run_continues_with_the_right_view():
    ds = views_dataset(_views(2), batch_size=5, seed=0, skip_epochs=3)
    first = next(iter(ds))[0].numpy()[:, 0]
    assert all(100 <= v < 200 for v in first)  # epoch 3 reads view 1


def test_views_must_cover_the_same_examples():
    with pytest.raises(ValueError, match="same examples"):
        views_dataset([_views(1)[0], _views(1, size=4)[0]], batch_size=2, seed=0)


def test_views_that_fit_the_budget():
    shape = (4, 4, 112)
    per_image = feature_bytes(shape, 1)
    assert per_image == 4 * 4 * 4 * 112
    budget = per_image * (2 * 1000 + 100)  # two train views plus validation
    assert views_that_fit(4, shape=shape, num_train=1000, num_val=100, budget=budget) == 2
    assert views_that_fit(1, shape=shape, num_train=1000, num_val=100, budget=budget) == 1
    assert views_that_fit(4, shape=shape, num_train=1000, num_val=100, budget=per_image * 500) == 0


def test_run_over_keeps_order_and_traces_once():
    import keras

    traces = []

    class Count(keras.layers.Layer):
        def call(self, x):
            traces.append(1)  # Python runs only while tracing
            return x * 2.0

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Count()(inputs))
    traces.clear()  # building the model called it once, symbolically
    function = inference_function(model)
    x = np.arange(30, dtype="float32").reshape(10, 3)
    y = np.arange(10)
    for batch in (4, 3):  # partial last batches of two sizes, two datasets
        out, labels = run_over(function, tf.data.Dataset.from_tensor_slices((x, y)).batch(batch))
        np.testing.assert_array_equal(out, 2 * x)
        np.testing.assert_array_equal(labels, y)
    assert len(traces) == 1
