"""TPU decisions, checked with the TPU FAKED: there is no TPU here (nor in CI).

Each test fakes what a TPU machine would show (environment variables, device files, a
TPUStrategy type, the resolver's error) and checks the decision effnet_tl takes from it; none
of them proves that a real TPU trains. ``benchmarks/gpu_smoke.py`` and the README say what
was run on real accelerators.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet_tl.classifier import build_classifier
from effnet_tl.data import resolve_source
from effnet_tl.train import tpu
from effnet_tl.train.defaults import DataFacts, resolve
from effnet_tl.train.settings import FitOptions
from effnet_tl.train.strategy import mixed_precision_policy_for
from effnet_tl.train.tpu_data import tpu_source


class FakeTPUStrategy(tf.distribute.TPUStrategy):
    """Only the type of a TPUStrategy (FAKE: nothing is connected)."""

    def __init__(self):
        pass


@pytest.mark.parametrize("environ, files, expected", [
    ({}, [], None),                                              # no TPU anywhere
    ({}, ["/dev/accel0", "/dev/accel1"], "local"),               # TPU VM, v4+ (fake files)
    ({}, ["/dev/vfio/0"], "local"),                              # Colab "TPU v2" VM (fake)
    ({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, [], "grpc://10.0.0.2:8470"),  # old Colab TPU node
    ({"TPU_NAME": "my-pod"}, [], "my-pod"),                      # Cloud TPU node by name
])
def test_resolver_target_from_the_faked_environment(environ, files, expected):
    assert tpu.tpu_target(None, environ=environ, device_files=files) == expected
    # An explicit address always wins.
    assert tpu.tpu_target("grpc://1.2.3.4:8470", environ=environ, device_files=files) == \
        "grpc://1.2.3.4:8470"


def test_connect_explains_a_cpu_only_tensorflow_on_a_tpu_vm(monkeypatch):
    # FAKE: the error TensorFlow raises on a TPU VM with a CPU-only wheel (tensorflow#96203).
    def cpu_only(tpu=None):
        raise tf.errors.NotFoundError(None, None, "No OpKernel was registered to support Op "
                                      "'ConfigureDistributedTPU' ... Registered devices: [CPU]")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", cpu_only)
    with pytest.raises(RuntimeError) as error:
        tpu.connect("local")
    message = str(error.value)
    assert f"pip install tensorflow-tpu=={tf.__version__} -f {tpu.TPU_WHEELS}" in message
    assert "\n" not in message


def test_a_tpu_vm_resolver_gets_local_and_is_not_connected_remotely(monkeypatch):
    seen = {}

    class FakeResolver:  # FAKE resolver: records the address it was given
        def __init__(self, tpu=None):
            seen["tpu"] = tpu

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster",
                        lambda resolver: seen.setdefault("remote", True))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda resolver: None)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda resolver: ("strategy", resolver))
    strategy = tpu.connect("local")
    assert seen == {"tpu": "local"} and strategy[0] == "strategy"


@pytest.mark.parametrize("requested, cores, expected", [
    (32, 8, 64), (64, 8, 64), (100, 8, 128), (8, 1, 8), (9, 1, 16), (256, 32, 256)])
def test_global_batch_is_rounded_up_to_8_per_core(requested, cores, expected):
    assert tpu.tpu_batch_size(requested, replicas=cores) == expected


def test_fit_settings_on_a_faked_tpu_round_the_batch_and_use_bfloat16():
    options = FitOptions.from_kwargs(variant="lite0", batch_size=40)
    facts = DataFacts(num_train=1000, num_val=200, replicas=8,
                      device_policy=mixed_precision_policy_for(FakeTPUStrategy()), tpu=True)
    settings = resolve(options, facts)
    assert settings.data.batch_size == 64
    assert settings.model.mixed_precision == "mixed_bfloat16"
    # The frozen-feature cache would run on the TPU host's CPU: train on images instead.
    assert settings.recipe.cache_features is False
    assert resolve(options, DataFacts(num_train=1000, num_val=200)).recipe.cache_features
    assert resolve(FitOptions.from_kwargs(variant="lite0"), facts).data.batch_size == 256


def test_bfloat16_policy_keeps_the_head_in_float32():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_classifier(3, variant="lite0", weights=None, image_size=32)
        output = model(np.zeros((2, 32, 32, 3), "float32"))
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    convolutions = [layer for layer in model.get_layer("backbone").layers
                    if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions[0].compute_dtype == "bfloat16"
    assert output.dtype == "float32"


def test_steps_per_execution_only_on_a_faked_tpu():
    assert tpu.steps_per_execution(FakeTPUStrategy(), 100) == 32
    assert tpu.steps_per_execution(FakeTPUStrategy(), 5) == 5
    assert tpu.steps_per_execution(tf.distribute.get_strategy(), 100) == 1


def test_data_placement_by_size():
    limit = tpu.IN_MEMORY_LIMIT_BYTES
    assert tpu.tpu_input(tpu_vm=True, decoded_bytes=10 * limit, gcs_dir=None) == "files"
    assert tpu.tpu_input(tpu_vm=False, decoded_bytes=limit, gcs_dir=None) == "memory"
    assert tpu.tpu_input(tpu_vm=False, decoded_bytes=limit + 1, gcs_dir="gs://b/x") == \
        "tfrecords"
    with pytest.raises(tpu.TpuInputError) as error:
        tpu.tpu_input(tpu_vm=False, decoded_bytes=3 * limit, gcs_dir="/local/folder")
    assert "3.0 GiB" in str(error.value) and "'/local/folder'" in str(error.value)
    assert "tpu_data_dir='gs://BUCKET/PATH'" in str(error.value)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    return tmp_path / "data"


def test_a_faked_tpu_node_gets_the_images_in_memory(folder):
    source = resolve_source(folder, val_fraction=0.5, seed=0)
    settings = resolve(FitOptions.from_kwargs(variant="lite0", image_size=16),
                       DataFacts(6, 6))
    moved = tpu_source(source, settings, verbose=0, tpu_vm=False)
    assert moved.train.images.shape == (6, 16, 16, 3) and moved.val.images.dtype == np.uint8
    np.testing.assert_array_equal(moved.train.labels, source.train.labels)
    assert tpu_source(source, settings, verbose=0, tpu_vm=True) is source  # a TPU VM: files


def test_large_data_for_a_faked_tpu_node_is_written_once_as_tfrecords(folder, tmp_path,
                                                                     monkeypatch):
    # A local folder stands in for gs:// (FAKE bucket: the rule only checks the scheme).
    monkeypatch.setattr(tpu, "IN_MEMORY_LIMIT_BYTES", 10)
    source = resolve_source(folder, val_fraction=0.5, seed=0)
    records = tmp_path / "bucket"
    settings = resolve(FitOptions.from_kwargs(variant="lite0", image_size=16,
                                               tpu_data_dir="gs://fake"), DataFacts(6, 6))
    written = []
    from effnet_tl.data import tfrecord
    real_to = tfrecord.to_tfrecords
    monkeypatch.setattr(tfrecord, "to_tfrecords", lambda examples, path: written.append(path)
                        or real_to(examples, str(records / path.split("/")[-1])))
    real_from = tfrecord.from_tfrecords
    monkeypatch.setattr(tfrecord, "from_tfrecords", lambda path, class_names=None: real_from(
        str(records / path.split("/")[-1]), class_names=class_names))
    moved = tpu_source(source, settings, verbose=0, tpu_vm=False)
    assert written == ["gs://fake/train", "gs://fake/val"]
    assert moved.train.num_examples == 6
    labels = sorted(int(label) for _, label in moved.train.dataset)
    assert labels == sorted(source.train.labels.tolist())
    assert json.loads((records / "train" / "manifest.json").read_text())["num_examples"] == 6
    tpu_source(source, settings, verbose=0, tpu_vm=False)
    assert written == ["gs://fake/train", "gs://fake/val"]  # the second run reuses them
