"""FitResult.predict on paths, folders, arrays and PIL images; flip TTA; bad files; evaluate."""

import dataclasses
import shutil

import numpy as np
import pytest
from PIL import Image

from effnet_tl.inference import evaluate, expand_inputs, read_pixels, trained_with_flips
from effnet_tl.train.run import load_run

pytestmark = pytest.mark.xdist_group("trained_run")  # the worker that holds the shared run

@pytest.fixture(scope="module")
def result(trained):
    return load_run(trained[1])


def test_paths_folders_arrays_and_pil_images_give_the_same_answer(trained, result):
    data, _ = trained
    png = min((data / "test" / "green").glob("*.png"))
    with Image.open(png) as image:
        pil = image.copy()
    pixels = np.asarray(pil)
    out = result.predict([png, pixels, pil, data / "test" / "green"])
    assert out.sources[:3] == (str(png), "<array 1>", "<PIL image 2>")
    assert out.sources[3:] == tuple(sorted(str(p) for p in (data / "test" / "green").iterdir()))
    np.testing.assert_allclose(out.probabilities[1:3], out.probabilities[[0, 0]], atol=1e-6)
    assert out.labels.count("green") >= len(out.labels) - 1
    # A float batch in [0, 1] is rescaled (with a warning), not silently misread.
    with pytest.warns(UserWarning, match=r"look like they are in \[0, 1\]"):
        unit = result.predict(pixels[None] / 255.0)
    np.testing.assert_allclose(unit.probabilities, out.probabilities[:1], atol=1e-5)


def test_a_file_gets_the_same_pixels_whatever_it_is_read_with(trained):
    data, _ = trained
    big = sorted((data / "test").rglob("big*.jpg"))
    alone = read_pixels(big[:1], (32, 32), resize="center_crop")
    # With a PNG in the batch the pipeline would drop JPEG DCT scaling for the whole batch;
    # prediction reads JPEGs and the rest apart, so every file's pixels stay its own.
    mixed = read_pixels([big[0], next((data / "test").rglob("*.png"))], (32, 32),
                        resize="center_crop")
    np.testing.assert_array_equal(mixed[:1], alone)


def test_flip_tta_averages_each_image_with_its_mirror(trained, result):
    data, _ = trained
    files = sorted((data / "test" / "blue").glob("*.*"))
    pixels = read_pixels(files, (32, 32), resize="center_crop")
    expected = (result.model.predict(pixels, verbose=0)
                + result.model.predict(np.flip(pixels, axis=2), verbose=0)) / 2
    np.testing.assert_allclose(result.predict(files, tta=True).probabilities, expected, atol=1e-5)


def test_flip_tta_is_refused_for_a_run_that_trained_without_flips(result):
    config = {**result.config, "settings": {**result.config["settings"],
                                            "data": {"augment": "auto", "resize": "crop"}},
              "decisions": {"flips": {"kept": False}}}
    no_flips = dataclasses.replace(result, config=config)
    assert trained_with_flips(result.config) is True and trained_with_flips(config) is False
    with pytest.raises(ValueError, match="trained without them.*flips turned off by the flip"):
        no_flips.predict(np.zeros((40, 40, 3), np.uint8), tta=True)


def test_a_bad_file_raises_by_default_and_is_skipped_when_asked(trained, result, tmp_path):
    data, _ = trained
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    good = sorted((data / "test" / "red").glob("*.png"))[:2]
    with pytest.raises(ValueError, match=f"1 of 3 files are not usable images: {bad}: file is "
                                         r"empty \(0 bytes\)"):
        result.predict([good[0], bad, good[1]])
    out = result.predict([good[0], bad, good[1]], errors="skip")
    assert out.sources == tuple(map(str, good))
    assert out.skipped == ((str(bad), "file is empty (0 bytes)"),)
    assert expand_inputs(tmp_path / "nothing_here.jpg")[0][0].endswith("nothing_here.jpg")


def test_evaluate_maps_a_subset_of_classes_in_another_order(trained, result, tmp_path):
    data, _ = trained
    # Only two of the three classes, under other folder names' order: labels follow names.
    for name in ("red", "blue"):
        shutil.copytree(data / "test" / name, tmp_path / "new" / name)
    report = evaluate(result, tmp_path / "new", output_dir=tmp_path / "out", top_k=(2,))
    assert report["split"] == "train" and report["num_examples"] == 16  # every image
    assert report["per_class"]["green"]["support"] == 0
    assert report["per_class"]["red"]["support"] == report["per_class"]["blue"]["support"] == 8
    assert report["accuracy"] >= 0.9 and report["top_k_accuracy"]["2"] >= report["accuracy"]
    assert (tmp_path / "out" / "confident_mistakes.png").is_file()
    (tmp_path / "new" / "purple").mkdir()
    shutil.copy(next((data / "test" / "red").glob("*.png")), tmp_path / "new" / "purple")
    with pytest.raises(ValueError, match=r"has classes the model was not trained on: \['purple'\]"):
        evaluate(result, tmp_path / "new")
