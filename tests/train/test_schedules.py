"""Tests for effnet_tl.train.schedules.WarmupCosine against a hand formula."""

import math

import keras
import numpy as np
import pytest

from effnet_tl.train.schedules import WarmupCosine


def _hand(step, peak, total, warmup, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("step, expected", [
    (0, 1e-3 * 1 / 10),          # first warm-up step is already non-zero
    (9, 1e-3),                   # end of warm-up reaches the peak
    (10, 1e-3),                  # first decay step, cosine at 0
    (55, 1e-5 + (1e-3 - 1e-5) * 0.5),  # midpoint of the decay: halfway between peak and floor
    (100, 1e-5),                 # end
    (250, 1e-5),                 # beyond the end stays at the floor
])
def test_values_against_hand_formula(step, expected):
    schedule = WarmupCosine(peak_lr=1e-3, total_steps=100, warmup_steps=10, min_lr=1e-5)
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)
    assert float(schedule(step)) == pytest.approx(_hand(step, 1e-3, 100, 10, 1e-5), rel=1e-5)


def test_whole_curve_and_final_fraction():
    schedule = WarmupCosine(peak_lr=0.1, total_steps=37, warmup_steps=5, final_lr_fraction=0.01)
    values = [float(schedule(step)) for step in range(40)]
    expected = [_hand(step, 0.1, 37, 5, 0.001) for step in range(40)]
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert values[36] > values[37] == pytest.approx(0.001)


def test_no_warmup_and_all_warmup_edges():
    assert float(WarmupCosine(peak_lr=2.0, total_steps=4)(0)) == pytest.approx(2.0)
    only_warmup = WarmupCosine(peak_lr=1.0, total_steps=4, warmup_steps=4)
    assert [float(only_warmup(s)) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.0])


def test_config_round_trip_and_keras_serialization():
    schedule = WarmupCosine(peak_lr=3e-4, total_steps=200, warmup_steps=20, final_lr_fraction=0.1)
    config = schedule.get_config()
    assert config == {"peak_lr": 3e-4, "total_steps": 200, "warmup_steps": 20,
                      "min_lr": pytest.approx(3e-5)}
    clone = WarmupCosine.from_config(config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, WarmupCosine)
    for step in (0, 19, 20, 110, 200):
        assert float(clone(step)) == pytest.approx(float(schedule(step)))
        assert float(restored(step)) == pytest.approx(float(schedule(step)))


def test_optimizer_with_schedule_survives_model_save(tmp_path):
    schedule = WarmupCosine(peak_lr=1e-2, total_steps=10, warmup_steps=2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule), loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=2, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer.learning_rate_schedule
                      if hasattr(loaded.optimizer, "learning_rate_schedule")
                      else loaded.optimizer._learning_rate, WarmupCosine)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(schedule(2)), rel=1e-5)


@pytest.mark.parametrize("kwargs, echoed", [
    (dict(peak_lr=0.0, total_steps=10), "peak_lr=0.0"),
    (dict(peak_lr=1.0, total_steps=0), "total_steps=0"),
    (dict(peak_lr=1.0, total_steps=10, warmup_steps=11), "warmup_steps=11"),
    (dict(peak_lr=1.0, total_steps=10, min_lr=2.0), "min_lr=2.0"),
    (dict(peak_lr=1.0, total_steps=10, min_lr=0.1, final_lr_fraction=0.1), "not both"),
    (dict(peak_lr=1.0, total_steps=10, final_lr_fraction=1.5), "final_lr_fraction=1.5"),
])
def test_bad_arguments_echo_values(kwargs, echoed):
    with pytest.raises(ValueError, match=echoed):
        WarmupCosine(**kwargs)
