"""Tests for effnet_tl.train.strategy, on whatever devices the machine has.

Tests that mean the CPU ask for it (``get_strategy("cpu")``); tests of ``"auto"`` compute what
to expect from the devices TensorFlow sees; the TPU (and, without one, the GPU) branches use
mocks.
"""

import pytest
import tensorflow as tf

from effnet_tl.train import strategy as strategy_module
from effnet_tl.train.strategy import STRATEGY_KINDS, get_strategy, mixed_precision_policy_for


def test_auto_without_tpu_uses_the_gpus_present_or_the_cpu(monkeypatch):
    for name in ("COLAB_TPU_ADDR", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(strategy_module, "tpu_target", lambda address: None)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    gpus = tf.config.list_logical_devices("GPU")
    strategy = get_strategy("auto")
    if len(gpus) > 1:
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        assert strategy.num_replicas_in_sync == len(gpus)
    else:  # one GPU or the CPU: the default strategy, one replica
        assert strategy is tf.distribute.get_strategy()
        assert strategy.num_replicas_in_sync == 1
    assert mixed_precision_policy_for(strategy) == ("mixed_float16" if gpus else "float32")


def test_cpu_kind_places_variables_on_cpu():
    strategy = get_strategy("cpu")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    with strategy.scope():
        variable = tf.Variable(1.0)
    assert "CPU" in variable.device.upper()
    assert mixed_precision_policy_for(strategy) == "float32"


def test_gpu_kind_uses_the_first_gpu_or_explains_there_is_none():
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(RuntimeError, match="no GPU"):
            get_strategy("gpu")
        return
    strategy = get_strategy("gpu")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    with strategy.scope():
        variable = tf.Variable(1.0)
    assert "GPU:0" in variable.device.upper()
    assert mixed_precision_policy_for(strategy) == "mixed_float16"


def test_bad_kind_echoes_value_and_lists_accepted():
    with pytest.raises(ValueError) as error:
        get_strategy("gpus")
    assert "'gpus'" in str(error.value)
    for kind in STRATEGY_KINDS:
        assert kind in str(error.value)


# The TPU branch can only be checked with a mock resolver here (no TPU on this machine):
# these tests cover the decision logic of get_strategy, not a real TPU connection.

def test_auto_prefers_tpu_when_the_resolver_succeeds(monkeypatch):
    calls = []
    sentinel = object()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(strategy_module, "connect", lambda target: calls.append(target) or sentinel)
    assert get_strategy("auto", tpu_address="grpc://10.0.0.2:8470") is sentinel
    assert calls == ["grpc://10.0.0.2:8470"]


def test_auto_falls_back_when_the_tpu_resolver_fails(monkeypatch, capsys):
    def failing(target):
        raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(strategy_module, "tpu_target", lambda address: "local")
    monkeypatch.setattr(strategy_module, "connect", failing)
    assert get_strategy("auto") is tf.distribute.get_strategy()
    assert "no TPU reachable" in capsys.readouterr().out


def test_auto_with_several_workers_in_tf_config_is_multi_worker(monkeypatch):
    # Checked without building the strategy (it must be the first thing a process creates).
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    monkeypatch.setattr(strategy_module, "_multi_worker_strategy", lambda: "multi-worker")
    assert get_strategy("auto") == "multi-worker"


def test_policy_for_tpu_and_gpu_strategies(monkeypatch):
    class FakeTPUStrategy(tf.distribute.TPUStrategy):
        def __init__(self):  # no TPU to connect to; only the type matters
            pass

    assert mixed_precision_policy_for(FakeTPUStrategy()) == "mixed_bfloat16"
    monkeypatch.setattr(strategy_module, "_strategy_devices",
                        lambda strategy: ("/job:localhost/replica:0/task:0/device:GPU:0",))
    assert mixed_precision_policy_for(tf.distribute.get_strategy()) == "mixed_float16"
