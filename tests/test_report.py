"""Tests for effnet_tl.report: metrics vs hand computation, real PNGs, mistake gallery."""

import json

import numpy as np
import pytest
from PIL import Image

from effnet_tl.report import (
    classification_report,
    confident_mistakes,
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_history,
)

NAMES = ["cat", "dog", "fox", "owl"]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 3, 0])
Y_PROB = np.array([
    [0.70, 0.10, 0.10, 0.10],  # 0 -> 0 right
    [0.20, 0.50, 0.20, 0.10],  # 0 -> 1 wrong (true class ties fox; lower index ranks 2nd)
    [0.05, 0.80, 0.10, 0.05],  # 1 -> 1 right
    [0.10, 0.20, 0.60, 0.10],  # 1 -> 2 wrong (true class 2nd)
    [0.10, 0.10, 0.70, 0.10],  # 2 -> 2 right
    [0.90, 0.04, 0.03, 0.03],  # 2 -> 0 wrong (true class 3rd, behind dog's 0.04)
    [0.30, 0.30, 0.35, 0.05],  # 3 -> 2 wrong (true class last)
    [0.60, 0.20, 0.10, 0.10],  # 0 -> 0 right
])


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.load()
        return image.size, np.asarray(image.convert("RGB"))


def test_metrics_match_hand_computation():
    report = classification_report(Y_TRUE, Y_PROB, NAMES, top_k=(2, 3, 4, 5))
    assert report["num_examples"] == 8
    assert report["accuracy"] == pytest.approx(4 / 8)
    # top-2: the four right ones plus rows 1 and 3 (true class ranked 2nd) -> 6/8.
    # top-3: plus row 5; row 6's true class (owl, 0.05) is last -> 7/8. k >= 4 is skipped.
    assert report["top_k_accuracy"] == {"2": pytest.approx(6 / 8), "3": pytest.approx(7 / 8)}
    # Predictions: [0, 1, 1, 2, 2, 0, 2, 0].
    # cat: predicted 3 times (rows 0, 5, 7), 2 right; 3 true cats, 2 found.
    cat = report["per_class"]["cat"]
    assert (cat["precision"], cat["recall"], cat["support"]) == (
        pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert cat["f1"] == pytest.approx(2 / 3)
    fox = report["per_class"]["fox"]  # predicted 3 times (3, 4, 6), 1 right; 2 true, 1 found
    assert fox["precision"] == pytest.approx(1 / 3) and fox["recall"] == pytest.approx(1 / 2)
    assert fox["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    owl = report["per_class"]["owl"]  # never predicted: precision 0 by convention
    assert (owl["precision"], owl["recall"], owl["f1"], owl["support"]) == (0.0, 0.0, 0.0, 1)
    assert report["confusion_matrix"] == [
        [2, 1, 0, 0],
        [0, 1, 1, 0],
        [1, 0, 1, 0],
        [0, 0, 1, 0],
    ]
    per_class_f1 = [report["per_class"][name]["f1"] for name in NAMES]
    assert report["macro_avg"]["f1"] == pytest.approx(np.mean(per_class_f1))
    json.dumps(report)  # report.json-ready


def test_one_hot_targets_and_bad_inputs():
    one_hot = np.eye(4)[Y_TRUE]
    assert classification_report(one_hot, Y_PROB, NAMES)["accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"3 names \(\['a', 'b', 'c'\]\)"):
        classification_report(Y_TRUE, Y_PROB, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[7\]"):
        classification_report(np.array([7] + [0] * 7), Y_PROB, NAMES)
    with pytest.raises(ValueError, match="top_k"):
        classification_report(Y_TRUE, Y_PROB, NAMES, top_k=(0,))


def test_confident_mistakes_order():
    # Wrong rows and their predicted-class probabilities: 1: 0.50, 3: 0.60, 5: 0.90, 6: 0.35.
    assert confident_mistakes(Y_TRUE, Y_PROB).tolist() == [5, 3, 1, 6]
    assert confident_mistakes(Y_TRUE, Y_PROB, n=2).tolist() == [5, 3]


def test_gallery_png_shows_the_most_confident_mistakes_first(tmp_path):
    # Each image is a flat colour; the top-left tile must be image 5's (pure red).
    images = np.zeros((8, 16, 16, 3), "float32")
    images[5, ..., 0] = 255.0
    images[3, ..., 1] = 255.0
    path = plot_confident_mistakes(images, Y_TRUE, Y_PROB, NAMES, tmp_path / "wrong.png",
                                   n=4, columns=2, tile_inches=2.0, dpi=50)
    size, pixels = _png_size(path)
    assert size == (200, 200)
    top_left, top_right = pixels[:100, :100], pixels[:100, 100:]
    is_red = (top_left[..., 0] > 200) & (top_left[..., 1] < 50) & (top_left[..., 2] < 50)
    is_green = (top_right[..., 1] > 200) & (top_right[..., 0] < 50) & (top_right[..., 2] < 50)
    assert is_red.sum() > 500 and is_green.sum() > 500


def test_gallery_without_mistakes_still_writes_a_png(tmp_path):
    right = np.eye(4)[[0, 1, 2, 3]]
    size, _ = _png_size(plot_confident_mistakes(np.zeros((4, 8, 8, 1)), [0, 1, 2, 3], right,
                                                NAMES, tmp_path / "none.png", dpi=40))
    assert size == (400, 100)


def test_confusion_matrix_png_size_and_content(tmp_path):
    cm = classification_report(Y_TRUE, Y_PROB, NAMES)["confusion_matrix"]
    size, pixels = _png_size(plot_confusion_matrix(cm, NAMES, tmp_path / "cm.png",
                                                   size_inches=(5, 4), dpi=80))
    assert size == (400, 320)
    assert pixels.std() > 20
    default_size, _ = _png_size(plot_confusion_matrix(cm, NAMES, tmp_path / "d.png", dpi=50))
    assert default_size == (200, 200)  # max(4, 0.5 * 4 + 2) = 4 inches square
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        plot_confusion_matrix([[1, 0], [0, 1]], NAMES, tmp_path / "x.png")


def test_history_from_csv_and_dict(tmp_path):
    csv_path = tmp_path / "history.csv"
    csv_path.write_text(
        "epoch,phase,loss,accuracy,val_loss,val_accuracy,learning_rate\n"
        "0,head,1.0,0.5,1.1,0.45,0.001\n1,head,0.8,0.6,0.9,0.55,0.001\n"
        "2,finetune,0.6,0.7,0.7,0.65,0.0001\n"
    )
    size, pixels = _png_size(plot_history(csv_path, tmp_path / "curves.png", dpi=50))
    assert size == (int(4.5 * 3 * 50), int(3.5 * 50))  # loss, accuracy, learning_rate panels
    assert pixels.std() > 10
    size, _ = _png_size(plot_history({"loss": [1.0, 0.5]}, tmp_path / "d.png",
                                     size_inches=(4, 3), dpi=50))
    assert size == (200, 150)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        plot_history(tmp_path / "missing.csv", tmp_path / "x.png")
