"""Our builder against keras.applications: identical outputs and parameter counts."""

import numpy as np
import pytest

import keras

import effnet_tl
from effnet_tl.models import WeightsMismatchError
from tests.models.keras_reference import (
    KERAS_APPLICATIONS,
    keras_reference,
    keras_reference_from_file,
    write_official_h5,
)

FAST_PARITY = [("b0", 64), ("v2-b0", 64), ("v2-s", 64)]
ALL_PARITY = [(name, 64) for name in KERAS_APPLICATIONS]


def _keras_block_output(reference, block):
    """keras.applications' name for the output of our block ``block`` (e.g. block2b_add)."""
    names = {layer.name for layer in reference.layers}
    for suffix in ("add", "project_activation", "project_bn"):
        if f"{block}_{suffix}" in names:
            return f"{block}_{suffix}"
    raise AssertionError(f"no keras layer for {block}")


def _outputs(model, names, images):
    """The model's output, then the named layers' outputs, from one eager call (for the
    biggest variants, tracing ``predict`` took longer than running them)."""
    probe = keras.Model(model.inputs[0],
                        [model.outputs[0]] + [model.get_layer(n).output for n in names])
    return [np.asarray(t) for t in probe(images, training=False)]


def _assert_parity(variant, size, include_top, tmp_path):
    shape = (size, size, 3)
    path = write_official_h5(
        keras_reference(variant, include_top=include_top, input_shape=shape),
        tmp_path / f"{variant}.h5",
    )
    reference = keras_reference_from_file(variant, include_top=include_top, input_shape=shape,
                                          path=path)
    ours = effnet_tl.backbone(variant, weights=str(path), include_top=include_top,
                              input_shape=shape)
    images = np.random.default_rng(1).uniform(0, 255, (2,) + shape).astype("float32")
    # Deep random networks contract differences away, so the final output alone would hide
    # e.g. a wrong input normalisation: compare the stem and the last block of every stage.
    blocks = [l.name for l in ours.layers if isinstance(l, effnet_tl.layers.MBConv)
              or isinstance(l, effnet_tl.layers.FusedMBConv)]
    stage_ends = [b for b, nxt in zip(blocks, blocks[1:] + ["end"]) if b[:6] != nxt[:6]]
    actual, *ours_out = _outputs(ours, ["stem_activation"] + stage_ends, images)
    expected, *keras_out = _outputs(
        reference, ["stem_activation"] + [_keras_block_output(reference, b) for b in stage_ends],
        images)
    assert np.abs(expected).max() > 1e-2  # the comparison is not between near-zero tensors
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
    for name, a, b in zip(["stem_activation"] + stage_ends, ours_out, keras_out):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, atol=1e-4 * scale, rtol=0, err_msg=name)
    assert ours.count_params() == reference.count_params()


@pytest.mark.parametrize("variant, size", FAST_PARITY)
@pytest.mark.parametrize("include_top", [True, False])
def test_outputs_match_keras_applications(variant, size, include_top, tmp_path):
    _assert_parity(variant, size, include_top, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant, size", [p for p in ALL_PARITY if p not in FAST_PARITY])
def test_outputs_match_keras_applications_all_variants(variant, size, tmp_path):
    # With the top: the same body plus the classifier. The no-top weight files (loaded by
    # layer name) are checked for each family (B, V2 B, V2 S-L) by the fast test above.
    _assert_parity(variant, size, True, tmp_path)


FAST_COUNTS = ["b0", "v2-b0", "v2-s"]


@pytest.mark.parametrize(
    "variant",
    [v if v in FAST_COUNTS else pytest.param(v, marks=pytest.mark.slow) for v in KERAS_APPLICATIONS],
)
def test_parameter_counts_equal_keras_without_the_top(variant):
    # With the top, the parity tests above compare every variant's count.
    keras.backend.clear_session()
    shape = (64, 64, 3)
    reference = KERAS_APPLICATIONS[variant](weights=None, include_top=False, input_shape=shape)
    ours = effnet_tl.backbone(variant, include_top=False, input_shape=shape)
    assert ours.count_params() == reference.count_params(), variant


@pytest.mark.slow
def test_published_parameter_counts():
    # GUIDE §3 / keras.applications documentation, with the 1000-class top.
    expected = {"b0": 5_330_571, "b3": 12_320_535, "b7": 66_658_687, "v2-b0": 7_200_312,
                "v2-s": 21_612_360}
    for variant, count in expected.items():
        assert effnet_tl.backbone(variant, include_top=True).count_params() == count


def test_layer_names_allow_freezing_by_block():
    model = effnet_tl.backbone("b0", input_shape=(64, 64, 3))
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["image", "normalization"]
    assert names[2:5] == ["stem_conv", "stem_bn", "stem_activation"]
    assert names[5:9] == ["block1a", "block2a", "block2b", "block3a"]
    assert names[-3:] == ["top_conv", "top_bn", "top_activation"]
    assert isinstance(model.get_layer("block6d"), effnet_tl.layers.MBConv)


def test_v2_uses_fused_blocks_early():
    model = effnet_tl.backbone("v2-b0", input_shape=(64, 64, 3))
    assert isinstance(model.get_layer("block3b"), effnet_tl.layers.FusedMBConv)
    assert isinstance(model.get_layer("block4a"), effnet_tl.layers.MBConv)


def test_multiscale_features():
    model = effnet_tl.backbone("b0", input_shape=(96, 96, 3))
    features = effnet_tl.feature_extractor(model)
    out = features(np.zeros((1, 96, 96, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stride_4": (1, 24, 24, 24), "stride_8": (1, 12, 12, 40),
        "stride_16": (1, 6, 6, 112), "stride_32": (1, 3, 3, 320),
    }
    # The endpoints are the backbone's own block outputs, not copies.
    assert features.get_layer("block7a") is model.get_layer("block7a")


@pytest.mark.parametrize(
    "variant",
    ["lite4"] + [pytest.param(v, marks=pytest.mark.slow) for v in effnet_tl.VARIANTS if v != "lite4"],
)
def test_every_named_variant_builds_and_runs(variant):
    model = effnet_tl.backbone(variant, input_shape=(32, 32, 3), pooling="avg")
    out = model(np.full((1, 32, 32, 3), 128.0, "float32"))
    assert out.shape == (1, model.get_layer("top_conv").filters)
    assert np.isfinite(np.asarray(out)).all()


def test_lite_stem_and_head_stay_fixed_while_blocks_scale():
    model = effnet_tl.backbone("lite4", input_shape=(32, 32, 3))
    assert model.get_layer("stem_conv").filters == 32
    assert model.get_layer("top_conv").filters == 1280
    assert model.get_layer("block1a").filters_in == 32  # reads the fixed stem
    assert model.get_layer("block2a").filters_out == 32  # round_filters(24, 1.4) = 32
    assert model.get_layer("block7a").filters_out == 448  # round_filters(320, 1.4)


def test_variable_input_size():
    model = effnet_tl.backbone("lite0", input_shape=(None, None, 3), pooling="avg")
    assert model(np.zeros((1, 70, 90, 3), "float32")).shape == (1, 1280)


def test_drop_path_grows_linearly():
    model = effnet_tl.backbone("b0", input_shape=(64, 64, 3), drop_path_rate=0.2)
    blocks = [l for l in model.layers if isinstance(l, effnet_tl.layers.MBConv)]
    rates = [b.drop_path_rate for b in blocks]
    assert rates == pytest.approx([0.2 * i / 16 for i in range(16)])


def test_custom_phi_trains_saves_and_reloads(tmp_path):
    spec = effnet_tl.custom_variant(0.5)
    model = effnet_tl.backbone(spec, include_top=True, num_classes=3, input_shape=(32, 32, 3))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = keras.utils.to_categorical([0, 1, 2, 0], 3)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    path = tmp_path / "phi05.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(model(images, training=False)),
                                  np.asarray(reloaded(images, training=False)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "b9"}, "Unknown variant 'b9'"),
        ({"input_shape": (16, 16, 3)}, r"input_shape=\(16, 16, 3\) is too small"),
        ({"input_shape": (64, 64, 1)}, "channels must be 3"),
        ({"input_shape": (64, 64)}, r"must be \(height, width, channels\)"),
        ({"pooling": "mean"}, "pooling='mean'"),
        ({"num_classes": 0, "include_top": True}, "num_classes=0"),
        ({"drop_path_rate": 1.5}, "drop_path_rate=1.5"),
        ({"weights": "/no/such/file.h5"}, "no such file"),
    ],
)
def test_bad_arguments_echo_their_value(kwargs, message):
    kwargs.setdefault("variant", "b0")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        effnet_tl.backbone(**kwargs)


def test_weights_of_another_variant_are_rejected(tmp_path):
    path = write_official_h5(
        keras_reference("b1", include_top=False, input_shape=(64, 64, 3)), tmp_path / "b1.h5")
    with pytest.raises(WeightsMismatchError, match="not in the file|another variant"):
        effnet_tl.backbone("b3", weights=str(path), input_shape=(64, 64, 3))
    with pytest.raises(WeightsMismatchError, match="layers the model lacks"):
        effnet_tl.backbone("b0", weights=str(path), input_shape=(64, 64, 3))


def test_include_top_with_a_class_count_the_file_lacks(tmp_path):
    path = write_official_h5(
        keras_reference("b0", include_top=True, input_shape=(224, 224, 3)), tmp_path / "b0.h5")
    with pytest.raises(WeightsMismatchError, match="num_classes=10.*1000 classes"):
        effnet_tl.backbone("b0", weights=str(path), include_top=True, num_classes=10)
    notop = write_official_h5(
        keras_reference("b0", include_top=False, input_shape=(64, 64, 3)), tmp_path / "nt.h5")
    with pytest.raises(WeightsMismatchError, match="no-top file"):
        effnet_tl.backbone("b0", weights=str(notop), include_top=True)
