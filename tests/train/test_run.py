"""The run folder (fresh, resume, finished, conflict) and prediction input: prepare_images
is exactly the evaluation pipeline's output.

The files are written here (PNG and JPEG, odd sizes, grayscale, EXIF-rotated, large enough for
DCT-scaled decoding); the reference is make_dataset(training=False), our own pipeline.
"""

import numpy as np
import pytest
from PIL import Image

from effnet_tl.data import ArrayExamples, eval_resize, make_dataset, read_eval_images, scan
from effnet_tl.train.run import prepare_images, read_json

# Odd sizes (height, width), both orientations, and one big enough (>= 2x the output) for the
# pipeline's reduced-scale JPEG decoding.
SIZES = [(37, 53), (61, 29), (45, 45), (203, 151)]
IMAGE_SIZE = (24, 20)


def _smooth(rng, height, width):
    """A smooth random picture (JPEG-friendly) as uint8 RGB."""
    small = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    for kind in ("a", "b"):
        (root / kind).mkdir(parents=True)
    for index, (height, width) in enumerate(SIZES):
        pixels = _smooth(rng, height, width)
        Image.fromarray(pixels).save(root / "a" / f"{index}.png")
        Image.fromarray(pixels).save(root / "b" / f"{index}.jpg", quality=90)
    Image.fromarray(_smooth(rng, 33, 47)[..., 0]).save(root / "a" / "gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: the pipeline decodes it with Pillow
    Image.fromarray(_smooth(rng, 31, 57)).save(root / "b" / "rotated.jpg", exif=exif.tobytes())
    return scan(root, val_fraction=0).source.train


def _pipeline(examples, **kwargs):
    kwargs.setdefault("cache", None)
    dataset = make_dataset(examples, image_size=IMAGE_SIZE, batch_size=64, training=False, **kwargs)
    return np.concatenate([images.numpy() for images, _ in dataset])


def test_prediction_input_of_files_is_the_evaluation_pipelines_output(files):
    assert set(files.decoders) == {"png", "jpeg", "pillow"}
    assert (files.sizes // np.array(IMAGE_SIZE) >= 2).all(axis=1).any()  # DCT scaling is used
    predicted = prepare_images(list(files.paths), IMAGE_SIZE)
    expected = _pipeline(files, resize="center_crop")
    assert predicted.shape == expected.shape == (len(files), *IMAGE_SIZE, 3)
    assert np.abs(predicted - expected).max() < 1e-4
    # A cached pipeline stores rounded uint8 pixels: the same up to the rounding.
    cached = _pipeline(files, resize="center_crop", cache="memory")
    assert np.abs(predicted - cached).max() <= 0.5 + 1e-4
    # "crop" evaluates as the centre crop; "pad" and "stretch" are honoured too.
    np.testing.assert_array_equal(prepare_images(list(files.paths), IMAGE_SIZE, resize="crop"),
                                  predicted)
    for policy in ("pad", "stretch"):
        got = prepare_images(list(files.paths), IMAGE_SIZE, resize=policy)
        assert np.abs(got - _pipeline(files, resize=policy)).max() < 1e-4


def test_prediction_input_of_arrays_is_the_evaluation_pipelines_output():
    rng = np.random.default_rng(1)
    for height, width in SIZES + [IMAGE_SIZE]:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = _pipeline(ArrayExamples(pixels[None], [0], ("a",)))
        assert np.abs(prepare_images(pixels, IMAGE_SIZE) - expected).max() < 1e-4
        pil = Image.fromarray(pixels)
        assert np.abs(prepare_images([pil], IMAGE_SIZE) - expected).max() < 1e-4
    gray = rng.integers(0, 256, (19, 41), dtype=np.uint8)
    expected = _pipeline(ArrayExamples(gray[None, ..., None], [0], ("a",)))
    assert np.abs(prepare_images(gray, IMAGE_SIZE) - expected).max() < 1e-4


def test_mixed_lists_keep_their_order(files):
    arrays = [np.full((30, 40, 3), 9, np.uint8), np.full((40, 30, 3), 99, np.uint8)]
    mixed = [arrays[0], files.paths[0], arrays[1], files.paths[1]]
    out = prepare_images(mixed, IMAGE_SIZE)
    np.testing.assert_array_equal(out[0], np.full((*IMAGE_SIZE, 3), 9.0, np.float32))
    np.testing.assert_array_equal(out[2], np.full((*IMAGE_SIZE, 3), 99.0, np.float32))
    np.testing.assert_array_equal(out[[1, 3]], read_eval_images(files.paths[:2], IMAGE_SIZE))


def test_center_crop_window_rounds_half_up_on_every_path(tmp_path):
    # A 5 x 20 image at a 5:2 (w:h) output: the window is 12.5 wide, 13 rounded half up
    # (tf.round would give 12). Files with known sizes and arrays must take the same window.
    import tensorflow as tf

    pixels = (np.arange(5 * 20 * 3).reshape(5, 20, 3) * 7 % 251).astype(np.uint8)
    expected = tf.image.resize(pixels[:, 3:16], (2, 5)).numpy()  # (20 - 13) // 2 = 3
    np.testing.assert_allclose(eval_resize(pixels, (2, 5)), expected, atol=1e-4)
    Image.fromarray(pixels).save(tmp_path / "strip.png")
    np.testing.assert_allclose(read_eval_images([tmp_path / "strip.png"], (2, 5))[0], expected,
                               atol=1e-4)


def test_bad_files_fail_prediction_with_the_doctors_reason(tmp_path, files):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=r"1 of 2 files are not usable images: .*notes\.jpg"):
        prepare_images([files.paths[0], bad], IMAGE_SIZE)
    assert read_eval_images([], IMAGE_SIZE).shape == (0, *IMAGE_SIZE, 3)


def test_unit_range_arrays_are_rescaled_with_a_warning():
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        out = prepare_images(images, (32, 32))
    np.testing.assert_allclose(out, images * 255.0, rtol=1e-6)


def _config(**recipe):
    return {"settings": {"model": {"variant": "lite0"}, "recipe": {"head_epochs": 2, **recipe}}}


def test_run_folder_lifecycle_fresh_resume_finished_and_conflict(tmp_path):
    from effnet_tl.train.run import (
        RunFolderConflict,
        RunPaths,
        finish_run_dir,
        prepare_run_dir,
        write_json,
    )

    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    (paths.root / "notes.txt").write_text("the user's own file")
    assert prepare_run_dir(paths, _config(), overwrite=False) == "fresh"
    # A failed start (config written, no epoch): other settings simply start afresh.
    assert prepare_run_dir(paths, _config(head_epochs=3), overwrite=False) == "fresh"
    paths.history.write_text("epoch,phase\n0,head\n")
    paths.backup.mkdir()
    assert prepare_run_dir(paths, _config(head_epochs=3), overwrite=False) == "resume"
    with pytest.raises(RunFolderConflict, match=r"changed: head_epochs\); pass overwrite=True") \
            as conflict:
        prepare_run_dir(paths, _config(head_epochs=4), overwrite=False)
    assert "pass --overwrite" in conflict.value.message("--overwrite")
    write_json(paths.phases, {"head": {"done": True, "epochs": 1}})
    finish_run_dir(paths, read_json(paths.phases), keep_backups=False)
    assert not paths.backup.exists() and read_json(paths.phases)["finished"] is True
    assert prepare_run_dir(paths, _config(head_epochs=3), overwrite=False) == "finished"
    assert paths.history.exists()  # a finished run is left as it is
    assert prepare_run_dir(paths, _config(head_epochs=3), overwrite=True) == "fresh"
    assert not paths.history.exists() and not paths.phases.exists()
    assert (paths.root / "notes.txt").read_text() == "the user's own file"
