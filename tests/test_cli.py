"""The effnet-tl command: argument parsing and the early num_classes check, run for real."""

import numpy as np
import pytest
from PIL import Image

from effnet_tl import cli


def test_fit_requires_num_classes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "some_dir"])
    assert "--num-classes" in capsys.readouterr().err


def test_fit_checks_num_classes_before_training(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(
                tmp_path / "data" / name / f"{i}.png")
    with pytest.raises(ValueError, match=r"num_classes=3 but dataset_dir has 2 class folders"):
        cli.main(["fit", str(tmp_path / "data"), "--num-classes", "3", "--variant", "lite0",
                  "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_fit_rejects_a_bad_finetune_views_before_reading_data(tmp_path):
    with pytest.raises(ValueError, match=r"finetune_views='-1'"):
        cli.main(["fit", str(tmp_path / "missing"), "--num-classes", "2",
                  "--finetune-views", "-1", "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_unfreeze_argument_parsing():
    assert cli._unfreeze("4") == 4
    assert cli._unfreeze("block6a") == "block6a"
    assert cli._unfreeze("all") == "all"


def test_demo_writes_a_stratified_digit_split(tmp_path):
    split = cli.write_digits(tmp_path / "digits")
    assert len(split["y_train"]) == 1437 and len(split["y_test"]) == 360
    assert sorted(p.name for p in (tmp_path / "digits" / "train").iterdir()) == [str(d) for d in range(10)]
    counts = np.bincount(split["y_test"], minlength=10)
    assert counts.min() >= 35  # stratified: every digit ~36 times in the test split
    with Image.open(next((tmp_path / "digits" / "test" / "3").glob("*.png"))) as image:
        assert image.size == (8, 8) and np.asarray(image).max() > 200
    assert 0.94 <= cli.baseline_accuracy(split) <= 0.99
