"""make_dataset: exact pixels per resize policy, determinism, caching, static shapes, bad files."""

import logging

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet_tl.data import (
    ArrayExamples,
    DatasetExamples,
    FileExamples,
    load_rgb,
    make_dataset,
    scan,
    to_memory,
)


def _wide_png(tmp_path, name="wide.png", seed=0):
    """A 30 high x 60 wide random PNG (lossless, so pixels can be compared exactly)."""
    array = np.random.default_rng(seed).integers(0, 256, (30, 60, 3), dtype=np.uint8)
    path = tmp_path / "d" / "a" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path, array


def _source(paths, labels, names):
    from effnet_tl.data import DatasetSource

    return DatasetSource("files", tuple(names), FileExamples(tuple(map(str, paths)), labels, names))


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_center_crop_pad_and_stretch_give_exact_pixels(tmp_path):
    path, array = _wide_png(tmp_path)
    ex = scan(_source([path], [0], ["a"])).source.train
    crop = next(iter(make_dataset(ex, image_size=30, batch_size=1, training=False)))[0][0].numpy()
    np.testing.assert_array_equal(crop, array[:, 15:45].astype(np.float32))
    pad = next(iter(make_dataset(ex, image_size=60, batch_size=1, training=False, resize="pad")))[
        0
    ][0].numpy()
    assert (pad[:15] == 0).all() and (pad[45:] == 0).all()
    stretched = make_dataset(
        ex, image_size=(30, 60), batch_size=1, training=False, resize="stretch"
    )
    np.testing.assert_array_equal(next(iter(stretched))[0][0].numpy(), array.astype(np.float32))


def test_jpeg_crop_window_decode_matches_full_decode(img, tmp_path):
    path = img.noise(tmp_path / "d" / "a" / "n.jpg", size=(64, 40), quality=90)
    ex = scan(_source([path], [0], ["a"])).source.train
    assert ex.decoders == ("jpeg",)
    got = next(iter(make_dataset(ex, image_size=40, batch_size=1, training=False)))[0][0].numpy()
    full = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3).numpy()
    np.testing.assert_array_equal(got, full[:, 12:52].astype(np.float32))


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0 chroma
def test_jpeg_random_crops_are_the_full_decodes_pixels(tmp_path, subsampling):
    # The same random crops from JPEGs and from PNG copies of their full decode must be the
    # same pixels. (Decoding only the crop window, tf.io.decode_and_crop_jpeg, breaks this at
    # the window's edge columns for subsampled chroma; with one MCU of context on each side it
    # holds again, but then measured no faster on 500x375 photos, so it is not used.)
    rng = np.random.default_rng(subsampling)
    jpegs, pngs = [], []
    for i, (h, w) in enumerate([(37, 90), (61, 53), (48, 120), (75, 75)]):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        jpeg = tmp_path / "jpg" / "a" / f"{i}.jpg"
        jpeg.parent.mkdir(parents=True, exist_ok=True)
        image.save(jpeg, quality=85, subsampling=subsampling)
        png = tmp_path / "png" / "a" / f"{i}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tf.io.decode_jpeg(tf.io.read_file(str(jpeg)), channels=3).numpy()).save(png)
        jpegs.append(jpeg)
        pngs.append(png)

    def crops(paths):
        ex = scan(_source(paths, [0] * 4, ["a"])).source.train
        ds = make_dataset(ex, image_size=24, batch_size=4, training=True, resize="random_crop",
                          seed=3, shuffle=False, cache=None)
        return ex, next(iter(ds))[0].numpy()

    jpeg_ex, from_jpeg = crops(jpegs)
    png_ex, from_png = crops(pngs)
    assert set(jpeg_ex.decoders) == {"jpeg"} and set(png_ex.decoders) == {"png"}
    np.testing.assert_array_equal(from_jpeg, from_png)


def test_pillow_path_matches_load_rgb(img, tmp_path):
    path = img.solid(tmp_path / "d" / "a" / "c.jpg", (0, 128, 255, 10), mode="CMYK", size=(20, 20))
    ex = scan(_source([path], [0], ["a"])).source.train
    assert ex.decoders == ("pillow",)
    got = next(iter(make_dataset(ex, image_size=20, batch_size=1, training=False)))[0][0].numpy()
    np.testing.assert_array_equal(got, load_rgb(path).astype(np.float32))


def test_deterministic_given_seed_and_random_crop_varies(tmp_path):
    paths = [_wide_png(tmp_path, f"{i}.png", seed=i)[0] for i in range(6)]
    ex = scan(_source(paths, [0, 1, 0, 1, 0, 1], ["a", "b"])).source.train

    def epochs(seed, cache):
        ds = make_dataset(ex, image_size=16, batch_size=3, training=True, seed=seed, cache=cache)
        return [_batches(ds) for _ in range(2)]

    first, second = epochs(7, None), epochs(7, None)
    for (x1, y1), (x2, y2) in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # A new epoch draws new crops; another seed gives other batches.
    assert not np.array_equal(first[0][0][0], first[1][0][0])
    assert not np.array_equal(epochs(8, None)[0][0][0], first[0][0][0])
    cached = epochs(7, "memory")
    assert sum(len(b[0]) for b in cached[0]) == 6


def test_temporary_disk_cache_folder_is_removed_with_its_dataset(tmp_path, monkeypatch):
    import gc
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp puts the cache
    paths = [_wide_png(tmp_path, f"{i}.png", seed=i)[0] for i in range(3)]
    ex = scan(_source(paths, [0, 1, 0], ["a", "b"])).source.train
    for kwargs in ({"cache": "disk"}, {"cache": "auto", "memory_budget_bytes": 0}):
        ds = make_dataset(ex, image_size=8, batch_size=2, training=False, **kwargs)
        for _ in range(2):  # the first epoch writes the cache, the second reads it
            assert sum(len(x) for x, _ in _batches(ds)) == 3
        (folder,) = scratch.glob("effnet_tl_cache_*")
        assert any(folder.iterdir())
        iterator = iter(ds)
        del ds
        gc.collect()
        assert folder.exists()  # an iterator still reads it
        next(iterator)
        del iterator
        gc.collect()
        assert not folder.exists()
    # A cache path of the caller's is theirs: never removed.
    mine = tmp_path / "mine" / "cache"
    mine.parent.mkdir()
    ds = make_dataset(ex, image_size=8, batch_size=2, training=False, cache=str(mine))
    _batches(ds)
    del ds
    gc.collect()
    assert any(mine.parent.iterdir())


def test_eval_batches_agree_with_memory_disk_and_no_cache(tmp_path):
    paths = [_wide_png(tmp_path, f"{i}.png", seed=i)[0] for i in range(5)]
    ex = scan(_source(paths, [0, 1, 2, 0, 1], ["a", "b", "c"])).source.train
    runs = [
        _batches(make_dataset(ex, image_size=12, batch_size=2, training=False, cache=cache))
        for cache in (None, "memory", "disk", str(tmp_path / "cachefile"), "auto")
    ]
    for run in runs[1:]:
        assert len(run) == 3
        for (x1, y1), (x2, y2) in zip(runs[0], run):
            # Caches hold the resized image rounded to uint8; uncached keeps the exact floats.
            np.testing.assert_allclose(x1, x2, atol=0.5, rtol=0)
            np.testing.assert_array_equal(y1, y2)
    for cached_run in runs[2:]:
        for (x1, _), (x2, _) in zip(runs[1], cached_run):
            np.testing.assert_array_equal(x1, x2)
    labels = np.concatenate([y for _, y in runs[0]])
    np.testing.assert_array_equal(labels, np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]])
    assert all(float(x.max()) <= 255 and float(x.min()) >= 0 for x, _ in runs[0])


def test_training_shuffle_with_cache_yields_each_example_once(tmp_path):
    paths = [_wide_png(tmp_path, f"{i}.png", seed=i)[0] for i in range(7)]
    ex = scan(_source(paths, [0] * 7, ["a"])).source.train
    ds = make_dataset(
        ex, image_size=8, batch_size=7, training=True, resize="stretch", cache="memory"
    )
    reference = np.stack(
        [tf.image.resize(np.asarray(Image.open(p)), (8, 8)).numpy() for p in paths]
    )
    reference = np.round(reference)
    for _ in range(2):
        images = next(iter(ds))[0].numpy()
        order = [int(np.argmin(np.abs(reference - image).sum(axis=(1, 2, 3)))) for image in images]
        assert sorted(order) == list(range(7))


def test_drop_remainder_gives_static_shapes():
    ex = ArrayExamples(np.zeros((10, 9, 9, 1), np.uint8), [0, 1] * 5, ("a", "b"))
    ds = make_dataset(ex, image_size=(4, 6), batch_size=4, training=True, drop_remainder=True)
    assert ds.element_spec[0].shape == (4, 4, 6, 3) and ds.element_spec[1].shape == (4, 2)
    assert len(_batches(ds)) == 2


def test_unchecked_files_with_a_bad_one_are_checked_and_logged(img, tmp_path, caplog):
    good = img.solid(tmp_path / "d" / "a" / "ok.png", (5, 6, 7), size=(10, 10))
    bad = img.write(tmp_path / "d" / "a" / "bad.jpg", b"\xff\xd8\xff\xe0 garbage")
    ex = FileExamples((str(good), str(bad)), [0, 0], ("a",))
    with caplog.at_level(logging.WARNING, logger="effnet_tl.data.pipeline"):
        batches = _batches(make_dataset(ex, image_size=10, batch_size=4, training=False))
    assert len(batches) == 1 and batches[0][0].shape == (1, 10, 10, 3)
    assert float(batches[0][0][0, 0, 0, 2]) == 7.0
    assert "skipping 1 bad files" in caplog.text and "bad.jpg: corrupt" in caplog.text


def test_dataset_examples_with_one_hot_labels_and_to_memory():
    images = np.arange(2 * 6 * 6 * 3, dtype=np.uint8).reshape(2, 6, 6, 3)
    stream = tf.data.Dataset.from_tensor_slices((images, np.eye(3, dtype=np.float32)[[2, 0]]))
    ex = DatasetExamples(stream, ("a", "b", "c"), 2)
    x, y = next(iter(make_dataset(ex, image_size=6, batch_size=2, training=False)))
    np.testing.assert_array_equal(x.numpy(), images.astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), np.eye(3)[[2, 0]])
    mem = to_memory(ex, image_size=6)
    np.testing.assert_array_equal(mem.images, images)
    assert mem.labels.tolist() == [2, 0]


def test_bad_arguments_fail_early():
    ex = ArrayExamples(np.zeros((2, 4, 4, 3), np.uint8), [0, 1], ("a", "b"))
    with pytest.raises(ValueError, match="resize must be one of"):
        make_dataset(ex, image_size=4, batch_size=1, training=False, resize="squash")
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(ex, image_size=4, batch_size=0, training=False)


def test_center_crop_without_known_sizes_reads_them_from_the_image(tmp_path):
    path, array = _wide_png(tmp_path)
    checked = scan(_source([path], [0], ["a"])).source.train
    assert checked.sizes.tolist() == [[30, 60]]
    no_sizes = FileExamples(
        checked.paths, checked.labels, checked.class_names, decoders=checked.decoders
    )
    for ex in (checked, no_sizes):
        got = next(iter(make_dataset(ex, image_size=(30, 20), batch_size=1, training=False)))[0][
            0
        ].numpy()
        np.testing.assert_array_equal(got, array[:, 20:40].astype(np.float32))
    crops = [
        next(iter(make_dataset(ex, image_size=8, batch_size=1, training=True, seed=3)))[0][
            0
        ].numpy()
        for ex in (checked, no_sizes)
    ]
    np.testing.assert_array_equal(crops[0], crops[1])


def test_exif_rotated_file_center_crop_uses_the_rotated_size(img, tmp_path):
    # Stored 60 wide x 20 high with orientation 6: shown 20 wide x 60 high.
    path = tmp_path / "d" / "a" / "r.jpg"
    path.parent.mkdir(parents=True)
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, :20] = 250  # left third bright: after a 90° clockwise turn it is the top third
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    ex = scan(_source([path], [0], ["a"])).source.train
    assert ex.sizes.tolist() == [[60, 20]] and ex.decoders == ("pillow",)
    got = next(iter(make_dataset(ex, image_size=(60, 20), batch_size=1, training=False)))[0][
        0
    ].numpy()
    np.testing.assert_array_equal(got, load_rgb(path).astype(np.float32))
    assert got[:15].mean() > 200 and got[-15:].mean() < 30


def test_large_jpegs_are_decoded_at_a_reduced_dct_scale(tmp_path):
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (400, 300), Image.BILINEAR
    )
    path = tmp_path / "d" / "a" / "big.jpg"
    path.parent.mkdir(parents=True)
    smooth.save(path, quality=95)
    ex = scan(_source([path], [0], ["a"])).source.train

    def first(**kwargs):
        ds = make_dataset(ex, image_size=64, batch_size=1, training=False, **kwargs)
        return next(iter(ds))[0][0].numpy()

    # Centre window of 300x300 at x=50; 300 // 64 = 4, so libjpeg decodes at 1/4: 100x75.
    quarter = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3, ratio=4)[0:75, 12:87]
    expected = np.floor(tf.image.resize(quarter, (64, 64)).numpy() + 0.5)
    np.testing.assert_array_equal(first(), expected)
    full = first(jpeg_dct_scaling=False)
    full_expected = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)[:, 50:350]
    np.testing.assert_array_equal(
        full, np.floor(tf.image.resize(full_expected, (64, 64)).numpy() + 0.5)
    )
    # The scaled window starts on a multiple of 4 (x=48, not 50); against an antialiased
    # full-resolution resize of that window the picture matches to about one grey level.
    aligned = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)[:, 48:348]
    ideal = tf.image.resize(aligned, (64, 64), antialias=True).numpy()
    assert np.abs(first() - ideal).mean() < 1.5
    stretched = first(resize="stretch")
    quarter_all = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3, ratio=4)
    np.testing.assert_array_equal(
        stretched, np.floor(tf.image.resize(quarter_all, (64, 64)).numpy() + 0.5)
    )
    train = make_dataset(ex, image_size=64, batch_size=1, training=True, seed=1)
    crops = [next(iter(train))[0][0].numpy() for _ in range(2)]
    assert crops[0].shape == (64, 64, 3) and not np.array_equal(crops[0], crops[1])


def test_a_file_tensorflow_cannot_decode_is_skipped_mid_epoch_not_raised(img, tmp_path):
    # Bypass the doctor on purpose: the pipeline's own safety net must still hold.
    good = img.noise(tmp_path / "a" / "ok.jpg", size=(20, 20), quality=90)
    bad = img.write(tmp_path / "a" / "liar.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    ex = FileExamples(
        (str(bad), str(good)), [0, 0], ("a",), decoders=("jpeg", "jpeg"), sizes=[[20, 20]] * 2
    )
    batches = _batches(make_dataset(ex, image_size=20, batch_size=2, training=False, cache=None))
    assert [x.shape[0] for x, _ in batches] == [1]
    expected = tf.io.decode_jpeg(tf.io.read_file(str(good)), channels=3).numpy()
    np.testing.assert_array_equal(batches[0][0][0], expected.astype(np.float32))
