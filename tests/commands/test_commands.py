"""The effnet-tl subcommands as a user runs them: real commands in subprocesses on real files.

fit (the shared run, tests/trained_run.py) -> predict -> evaluate -> export and the doctor on a
folder with bad files run as subprocesses; the rest calls ``cli.main`` in this process (each
subprocess pays TensorFlow's start-up): CSV output and TTA, variants, scale, argument errors
(exit status 2), bad run folders and a Lambda layer refused by safe mode (exit status 1).
"""

import csv
import json
import math

import keras
import numpy as np
import pytest
from PIL import Image

from effnet_tl import cli
from effnet_tl.data import inspect_file
from effnet_tl.inference import read_pixels
from effnet_tl.train.run import load_run
from tests.trained_run import run_command, square_image

# One xdist worker runs every user of the shared trained run (made once per worker).
pytestmark = pytest.mark.xdist_group("trained_run")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("effnet-tl: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_predict_names_a_corrupt_file_and_predicts_the_others(trained, tmp_path):
    data, run = trained
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = run_command("predict", run, data / "test", corrupt, "--top-k", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    reason = inspect_file(str(corrupt)).reason  # the doctor's words, e.g. "...Truncated..."
    assert f"effnet-tl: warning: skipped {corrupt}: {reason}\n" in done.stderr
    assert one_error_line(done.stderr).endswith(
        "1 of 25 files could not be read (named above); the other 24 were predicted")
    assert "effnet-tl: predicted 24/24 readable images\n" in done.stderr
    payload = json.loads(done.stdout)
    rows = payload["predictions"]
    assert [row["path"] for row in rows] == sorted(str(p) for p in (data / "test").rglob("*.*"))
    assert payload["skipped"] == [{"path": str(corrupt), "reason": reason}]
    truth = [row["path"].split("/")[-2] for row in rows]
    assert np.mean([row["label"] == t for row, t in zip(rows, truth)]) >= 0.9
    # The command prints what the Python API predicts, to float32 rounding.
    expected = load_run(run).predict([row["path"] for row in rows])
    np.testing.assert_allclose([row["confidence"] for row in rows], expected.confidences,
                               atol=1e-6)
    assert [len(row["top_k"]) for row in rows] == [2] * len(rows)


def test_predict_writes_a_csv_with_flip_tta(trained, tmp_path, capsys):
    data, run = trained
    files = sorted((data / "test" / "red").glob("*.png"))
    status = cli.main(["predict", str(run), *map(str, files), "--tta", "--output",
                       str(tmp_path / "preds.csv")])
    assert status == 0
    assert json.loads(capsys.readouterr().out) == {"output": str(tmp_path / "preds.csv"),
                                                   "predicted": len(files), "skipped": []}
    with (tmp_path / "preds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "confidence", "label_2", "probability_2",
                             "label_3", "probability_3"]
    # TTA: the mean of the model's probabilities for each image and its mirror.
    model = load_run(run).model
    pixels = read_pixels(files, (32, 32), resize="center_crop")
    mean = (model.predict(pixels, verbose=0) + model.predict(pixels[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose([float(row["confidence"]) for row in rows], mean.max(axis=1),
                               atol=1e-5)


def test_evaluate_gives_the_fit_report_of_the_test_split(trained, tmp_path):
    data, run = trained
    done = run_command("evaluate", run, data, "--output", tmp_path / "eval", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["split"] == "test" and summary["num_examples"] == 24
    fit_report = json.loads((run / "report.json").read_text())["test"]
    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert written["confusion_matrix"] == fit_report["confusion_matrix"]
    assert summary["accuracy"] == pytest.approx(fit_report["accuracy"])
    assert set(written["per_class"]) == {"blue", "green", "red"}
    with Image.open(summary["confusion_matrix"]) as plot:
        assert plot.format == "PNG"


def test_export_savedmodel_serves_image_bytes_as_the_keras_model(trained, tmp_path):
    import tensorflow as tf

    data, run = trained
    done = run_command("export", run, "--format", "savedmodel", "--top-k", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["check"]["passed"] and result["check"]["images"] == 24
    # Checked here again, independently: JPEG and PNG bytes in, the Keras model's
    # probabilities on the pipeline's pixels out (big JPEGs DCT-scaled on both sides).
    files = sorted((data / "test").rglob("*.*"))
    keras_p = load_run(run).model.predict(read_pixels(files, (32, 32), resize="center_crop"),
                                          verbose=0)
    serve = tf.saved_model.load(str(run / "export" / "savedmodel")).signatures[
        "serving_default"]
    out = serve(image_bytes=tf.constant([f.read_bytes() for f in files]))
    assert np.abs(out["probabilities"].numpy() - keras_p).max() <= 1e-4
    assert out["top_k_classes"].shape == (len(files), 2)
    names = [name.decode() for name in out["top_k_classes"].numpy()[:, 0]]
    assert names == [["blue", "green", "red"][i] for i in keras_p.argmax(axis=1)]
    card = (run / "export" / "README.md").read_text()
    assert "| `savedmodel` | TensorFlow SavedModel |" in card and "| passed |" in card
    assert (run / "export" / "labels.txt").read_text().split() == ["blue", "green", "red"]


def write_folder_with_bad_files(root):
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(square_image(rng, (200, 0, 0))).save(root / name / f"{i}.png")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "notes.png").write_text("not an image")
    return root


def test_doctor_names_bad_files_and_exits_1_until_they_are_quarantined(tmp_path):
    data = write_folder_with_bad_files(tmp_path / "pets")
    done = run_command("doctor", data, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "zero_byte     cat/empty.jpg: file is empty (0 bytes)" in done.stdout
    assert "not_an_image  dog/notes.png: not an image" in done.stdout
    assert "found 2 unusable files" in done.stderr
    moved = run_command("doctor", data, "--json", "--quarantine", tmp_path / "bad",
                        cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["counts"]["good"] == 6 and report["counts"]["skipped"] == 2
    assert sorted(p.name for p in (tmp_path / "bad").rglob("*.*")) == ["empty.jpg", "notes.png"]
    assert cli.main(["doctor", str(data)]) == 0  # clean now


def test_variants_count_as_keras_applications(capsys):
    assert cli.main(["variants", "b0", "lite0", "--json"]) == 0
    rows = {row["variant"]: row for row in json.loads(capsys.readouterr().out)}
    reference = keras.applications.EfficientNetB0(weights=None)
    assert rows["b0"]["params"] == reference.count_params()  # 5,330,571
    assert rows["b0"]["resolution"] == [224, 224]
    assert rows["b0"]["gmacs"] == pytest.approx(0.39, abs=0.01)  # Tan & Le 2019, Table 2
    assert rows["lite0"]["family"] == "lite"


def test_scale_prints_the_multipliers_and_the_scaled_stages(capsys):
    assert cli.main(["scale", "--phi", "1", "--json"]) == 0
    scaled = json.loads(capsys.readouterr().out)
    assert scaled["multipliers"]["depth"] == pytest.approx(1.2)
    assert scaled["multipliers"]["flops"] == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    # By hand: 224 x 1.15 = 257.6 -> nearest multiple of 8 = 256; B0's repeats x 1.2, rounded up.
    assert scaled["variant"]["resolution"] == 256
    assert [s["repeats"] for s in scaled["variant"]["stages"]] == [
        math.ceil(1.2 * r) for r in (1, 2, 2, 3, 3, 4, 1)]


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("argv, message", [
    (["export", "run", "--format", "tfjs"], "argument --format: invalid choice: 'tfjs'"),
    (["export", "run", "--format", "onnx", "--quantize", "int8"],
     "quantize='int8' applies to the tflite format only"),
    (["predict", "run", "a.jpg", "--output", "a.txt"], "--output must end in .csv or .json"),
    (["scale", "--phi", "-1"], "phi=-1.0 must be >= 0"),
    (["variants", "b9"], "Unknown variant 'b9'"),
])
def test_bad_arguments_are_one_line_and_status_2(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_bad_run_folders_are_one_line_errors(trained, tmp_path, capsys):
    data, _ = trained
    assert cli.main(["predict", str(tmp_path / "nowhere"), "a.jpg"]) == 1
    assert one_error_line(capsys.readouterr().err) == (
        f"effnet-tl: error: run folder '{tmp_path / 'nowhere'}' does not exist")
    assert cli.main(["evaluate", str(data), str(data)]) == 1  # a dataset, not a run
    assert f"'{data}' is not a finished effnet_tl run folder: no model.keras or labels.json" \
        in one_error_line(capsys.readouterr().err)


def test_a_model_with_a_lambda_layer_is_refused_by_safe_mode(trained, tmp_path, capsys):
    _, run = trained
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2)))(inputs)
    folder = tmp_path / "lambda_run"
    folder.mkdir()
    keras.Model(inputs, outputs).save(folder / "model.keras")
    for name in ("labels.json", "config.json"):
        (folder / name).write_bytes((run / name).read_bytes())
    assert cli.main(["predict", str(folder), str(run.parent / "shapes" / "test")]) == 1
    assert one_error_line(capsys.readouterr().err) == (
        f"effnet-tl: error: {folder / 'model.keras'} was refused by Keras safe mode (keras "
        f"{keras.__version__}): Requested the deserialization of a `Lambda` layer whose "
        "`function` is a Python lambda. Loading it could run code stored in the file, so "
        "effnet_tl never loads it; rebuild the model without that layer")
