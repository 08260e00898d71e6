"""Class names: order, labels.json round trip, the num_classes check, class weights."""

import json

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from effnet_tl.data import (
    check_num_classes,
    class_count,
    class_weights,
    read_labels,
    resolve_source,
    sorted_class_names,
    validate_num_classes,
    write_labels,
)


def test_sorted_class_names_are_stable_and_numeric_aware():
    assert sorted_class_names(["b", "a", "B", "b"]) == ("B", "a", "b")
    assert sorted_class_names([10, 2, 9, 2]) == ("2", "9", "10")


def test_labels_json_round_trip_and_format(tmp_path):
    path = write_labels(tmp_path / "run", ["cat", "dog", "éléphant"])
    assert path == tmp_path / "run" / "labels.json"
    assert json.loads(path.read_text()) == {
        "class_names": ["cat", "dog", "éléphant"],
        "num_classes": 3,
    }
    assert read_labels(tmp_path / "run") == ("cat", "dog", "éléphant")
    assert read_labels(path) == ("cat", "dog", "éléphant")
    (tmp_path / "plain.json").write_text('["x", "y"]')
    assert read_labels(tmp_path / "plain.json") == ("x", "y")
    (tmp_path / "bad.json").write_text('{"class_names": ["x"], "num_classes": 2}')
    with pytest.raises(ValueError, match="num_classes=2 but 1 class_names"):
        read_labels(tmp_path / "bad.json")


def test_check_num_classes_lists_the_folders():
    check_num_classes(["a", "b"], 2)
    check_num_classes(["a", "b"], None)
    with pytest.raises(ValueError) as info:
        check_num_classes(["a", "b", "c", "d", "e"], 3)
    assert str(info.value) == (
        "num_classes=3 but dataset_dir has 5 class folders: ['a', 'b', 'c', 'd', 'e']"
    )
    with pytest.raises(ValueError, match="num_classes=0 is not a class count"):
        check_num_classes(["a"], 0)
    # One folder: the message says why that cannot train, not only that the counts differ.
    with pytest.raises(ValueError) as info:
        check_num_classes(["china"], 2)
    assert str(info.value) == ("num_classes=2 but dataset_dir has 1 class folder: ['china']; "
                               "a classifier needs at least 2 classes, one folder each")


def test_class_count_counts_when_not_given_and_checks_when_given():
    assert class_count(["a", "b", "c"], None) == 3
    assert class_count(["a", "b"], np.int64(2)) == 2
    with pytest.raises(ValueError, match=r"num_classes=3 but the csv has 2 class folders"):
        class_count(["a", "b"], 3, what="the csv")
    for names in (["china"], []):
        with pytest.raises(ValueError) as info:
            class_count(names, None)
        assert str(info.value).endswith("a classifier needs at least 2 classes, one folder each")
        assert f"dataset_dir has {len(names)} class folder" in str(info.value)


@pytest.mark.parametrize("good", [2, 10, np.int64(3)])
def test_validate_num_classes_accepts_integers_from_two(good):
    assert validate_num_classes(good) == int(good)
    assert type(validate_num_classes(good)) is int


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, "2", True, None])
def test_validate_num_classes_echoes_the_value_and_says_what_is_accepted(bad):
    with pytest.raises(ValueError) as info:
        validate_num_classes(bad)
    assert str(info.value) == (
        f"num_classes={bad!r} is not a class count; accepted: an integer >= 2"
    )


def test_num_classes_mismatch_fails_at_resolve(img, tmp_path):
    for cls in ["ant", "bee", "cow"]:
        img.solid(tmp_path / "d" / cls / "0.png", (1, 2, 3))
    img.write(tmp_path / "d" / ".DS_Store", b"\0")  # not a class
    with pytest.raises(
        ValueError,
        match=r"num_classes=2 but dataset_dir has 3 class folders: \['ant', 'bee', 'cow'\]",
    ):
        resolve_source(tmp_path / "d", num_classes=2)
    assert resolve_source(tmp_path / "d", num_classes=3, val_fraction=0).class_names == (
        "ant",
        "bee",
        "cow",
    )


def test_class_weights_match_sklearn_balanced():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    weights = class_weights(labels, 3)
    assert list(weights) == [0, 1, 2]
    assert [weights[i] for i in range(3)] == pytest.approx(expected.tolist(), rel=1e-12)
    assert weights[1] == pytest.approx(20 / 9)
    one_hot = np.eye(3)[labels]
    assert class_weights(one_hot, 3) == weights


def test_class_weights_cover_absent_classes_and_reject_bad_labels():
    assert class_weights([0, 0, 1], 3) == {0: 0.75, 1: 1.5, 2: 1.0}
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        class_weights([0, 2], 2)
