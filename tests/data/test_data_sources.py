"""resolve_source: folders, split folders, CSV, DataFrame, arrays and tf.data.

"tfds:NAME" sources are tested in test_tfds_source.py.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from effnet_tl.data import resolve_source, scan, stratified_split


def _class_folder(img, root, counts):
    for cls, n in counts.items():
        for i in range(n):
            img.solid(root / cls / f"{i:02d}.png", (i, len(cls), 0))
    return root


def test_folder_split_is_stratified_seeded_and_ignores_system_files(img, tmp_path):
    root = _class_folder(img, tmp_path / "d", {"a": 10, "b": 5})
    img.write(root / "a" / "._00.png", b"\0\5\26\7")
    img.write(root / "__MACOSX" / "a" / "x.png", b"\0")
    src = resolve_source(root, val_fraction=0.2, seed=3)
    assert src.kind == "folder" and src.class_names == ("a", "b")
    assert np.bincount(src.train.labels).tolist() == [8, 4]
    assert np.bincount(src.val.labels).tolist() == [2, 1]
    assert set(src.train.paths).isdisjoint(src.val.paths)
    assert len(src.train.paths) + len(src.val.paths) == 15
    assert sorted(Path(p).name for p in src.ignored_files) == ["._00.png", "x.png"]
    again = resolve_source(root, val_fraction=0.2, seed=3)
    assert again.val.paths == src.val.paths
    other = resolve_source(root, val_fraction=0.2, seed=4)
    assert other.val.paths != src.val.paths
    for path, label in zip(src.train.paths, src.train.labels):
        assert Path(path).parent.name == src.class_names[label]


def test_stratified_split_keeps_singletons_in_train():
    train, val = stratified_split([0, 0, 0, 0, 1], 0.25, seed=0)
    assert len(val) == 1 and val[0] in (0, 1, 2, 3) and sorted([*train, *val]) == [0, 1, 2, 3, 4]
    train, val = stratified_split([0, 0, 0, 1, 1, 1], 0.5, seed=0)
    assert len(val) == 4  # 1.5 rounds half up to 2 per class


def test_split_folder_aliases_and_train_test_only(img, tmp_path):
    root = tmp_path / "s"
    _class_folder(img, root / "train", {"x": 4, "y": 4})
    _class_folder(img, root / "validation", {"x": 1, "y": 2})
    _class_folder(img, root / "test", {"x": 3, "y": 1})
    src = resolve_source(root)
    assert src.kind == "split_folder"
    assert (len(src.train), len(src.val), len(src.test)) == (8, 3, 4)
    assert np.bincount(src.val.labels).tolist() == [1, 2]

    root2 = tmp_path / "s2"
    _class_folder(img, root2 / "train", {"x": 5, "y": 5})
    _class_folder(img, root2 / "test", {"x": 2, "y": 2})
    src2 = resolve_source(root2, val_fraction=0.4)
    assert (len(src2.train), len(src2.val), len(src2.test)) == (6, 4, 4)
    assert all("/train/" in p for p in src2.val.paths)

    both = tmp_path / "s3"
    _class_folder(img, both / "val", {"x": 1})
    _class_folder(img, both / "valid", {"x": 1})
    _class_folder(img, both / "train", {"x": 1})
    with pytest.raises(ValueError, match="two folders for the 'val' split"):
        resolve_source(both)


def test_csv_relative_paths_and_split_column(img, tmp_path):
    _class_folder(img, tmp_path / "imgs", {"a": 3, "b": 3})
    rows = [
        (f"imgs/{c}/{i:02d}.png", c, "train" if i < 2 else "test") for c in "ab" for i in range(3)
    ]
    rows.append(("imgs/a/._hidden.png", "a", "train"))
    pd.DataFrame(rows, columns=["filename", "Class", "split"]).to_csv(
        tmp_path / "list.csv", index=False
    )
    src = resolve_source(tmp_path / "list.csv", val_fraction=0.5)
    assert src.kind == "csv" and src.class_names == ("a", "b")
    assert (len(src.train), len(src.val), len(src.test)) == (2, 2, 2)
    assert all(Path(p).is_file() for p in src.train.paths + src.val.paths + src.test.paths)
    assert [Path(p).name for p in src.ignored_files] == ["._hidden.png"]
    report = scan(src)
    assert report.counts["good"] == 6 and report.counts["skipped"] == 0


def test_dataframe_with_integer_labels(img, tmp_path):
    _class_folder(img, tmp_path, {"k": 4})
    frame = pd.DataFrame({"path": [f"k/{i:02d}.png" for i in range(4)], "label": [10, 2, 10, 2]})
    src = resolve_source(frame, root=tmp_path, val_fraction=0)
    assert src.kind == "dataframe" and src.class_names == ("2", "10")
    assert src.train.labels.tolist() == [1, 0, 1, 0]
    assert src.val is None


def test_arrays_with_string_labels():
    images = np.zeros((6, 4, 4, 3), np.uint8)
    src = resolve_source((images, ["dog", "cat", "dog", "cat", "dog", "cat"]), val_fraction=1 / 3)
    assert src.kind == "arrays" and src.class_names == ("cat", "dog")
    assert np.bincount(src.train.labels).tolist() == [2, 2] and np.bincount(
        src.val.labels
    ).tolist() == [1, 1]
    with pytest.raises(ValueError, match="not in class_names"):
        resolve_source((images, ["dog"] * 6), class_names=["cat"])


def test_tf_dataset_source_needs_class_names_for_int_labels():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 4, 4, 3), np.uint8), [0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="class_names"):
        resolve_source(ds)
    src = resolve_source(ds, class_names=["a", "b", "c"], val_fraction=0.4)
    assert src.kind == "dataset" and (len(src.train), len(src.val)) == (3, 2)
    labels = [int(l) for _, l in src.val.dataset]
    assert labels == [0, 1]
    one_hot = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 3)), np.eye(4)[[1, 3]]))
    assert resolve_source(one_hot, val_fraction=0).class_names == ("0", "1", "2", "3")


def test_unknown_inputs_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_source(tmp_path / "nope")
    with pytest.raises(TypeError, match="cannot use a int"):
        resolve_source(3)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no class sub-folders"):
        resolve_source(tmp_path / "flat")
    with pytest.raises(ValueError, match="val_fraction"):
        resolve_source(tmp_path / "flat", val_fraction=1.0)
