"""effnet_tl.fit end to end on real image files: accuracy, run folder, reload, resume, NaN, guards.

Tiny settings throughout (Lite0 with its offline ImageNet weights at 32 px, tens of images).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from effnet_tl.classifier import backbone_blocks
from effnet_tl.data import class_weights
from effnet_tl.train import fit, load_run

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
FAST = dict(variant="lite0", weights="imagenet", image_size=32, batch_size=8, augment="light",
            verbose=0, seed=0)


def make_folder(root: Path, per_class=20, size=40, seed=0) -> Path:
    """Class folders of noisy PNGs, each class a differently coloured square on grey noise."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            image[y:y + size // 2, x:x + size // 2] = colour
            Image.fromarray(image).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = make_folder(tmp_path_factory.mktemp("data") / "shapes")
    run_dir = tmp_path_factory.mktemp("runs") / "shapes"
    result = fit(data, 3, run_dir=run_dir, head_epochs=15, head_lr=1e-2, finetune_epochs=2,
                 unfreeze_blocks=1,
                 val_fraction=0.25, **FAST)
    return data, result


@pytest.mark.xdist_group("shapes_run")  # one worker trains the module fixture, not two
def test_reaches_high_validation_accuracy(trained):
    _, result = trained
    assert result.val_accuracy >= 0.9, result.metrics["val"]
    rows = result.history
    assert [row["phase"] for row in rows].count("finetune") == 2
    assert [row["epoch"] for row in rows] == list(range(len(rows)))


@pytest.mark.xdist_group("shapes_run")  # one worker trains the module fixture, not two
def test_run_folder_holds_every_artifact(trained):
    _, result = trained
    paths = result.paths
    for path in (paths.model, paths.labels, paths.config, paths.history, paths.report):
        assert path.is_file(), path
    assert json.loads(paths.labels.read_text())["class_names"] == ["blue", "green", "red"]
    config = json.loads(paths.config.read_text())
    assert config["settings"]["recipe"]["unfreeze_blocks"] == 1
    assert config["settings"]["recipe"]["cache_features"] is True
    # Fine-tuning trained the top block on the cached output of the layers below it: the
    # plain images and one augmented copy ("auto": half of 2 epochs, at least 2).
    phases = json.loads(paths.phases.read_text())
    assert phases["finetune_cache"]["views"] == 2
    assert phases["finetune_cache"]["boundary"] == backbone_blocks(result.model)[-1]
    report = json.loads(paths.report.read_text())
    assert {"feature_extraction", "head", "finetune_features", "finetune", "report"} <= set(
        report["phase_seconds"])
    assert report["val"]["accuracy"] == pytest.approx(result.val_accuracy)
    assert set(report["val"]["per_class"]["red"]) == {"precision", "recall", "f1", "support"}
    assert report["test"] is None  # this source has no test split
    assert not (paths.root / "backup").exists()  # resume state goes once the run finishes
    assert phases["finished"] is True
    for png in (paths.history_plot, paths.confusion_plot, paths.mistakes_plot):
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 100
            assert np.asarray(image).std() > 0  # not a blank canvas


@pytest.mark.xdist_group("shapes_run")  # one worker trains the module fixture, not two
def test_reload_safe_mode_predicts_identically(trained):
    data, result = trained
    files = sorted(str(p) for p in (data / "red").glob("*.png"))[:4]
    reloaded = keras.saving.load_model(result.paths.model, safe_mode=True)
    batch = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32)), "float32")
                      for f in files])
    np.testing.assert_array_equal(reloaded.predict(batch, verbose=0),
                                  result.model.predict(batch, verbose=0))
    predictions = result.predict(files)
    assert predictions.labels == ["red"] * 4
    labels, probabilities = predictions
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    again = load_run(result.run_dir).predict(files)
    np.testing.assert_allclose(again.probabilities, probabilities, rtol=1e-6)


@pytest.mark.xdist_group("shapes_run")  # one worker trains the module fixture, not two
def test_validation_accuracy_saturates_yet_the_kept_model_is_the_lowest_loss_epoch(trained):
    data, result = trained
    rows = result.history
    top = max(row["val_accuracy"] for row in rows)
    saturated = [row for row in rows if row["val_accuracy"] == top]
    assert len(saturated) > 3  # accuracy ties over many epochs: the case that kept epoch 1
    best = min(saturated, key=lambda row: row["val_loss"])
    kept = json.loads(result.paths.report.read_text())["kept"]
    assert kept["epoch"] == best["epoch"] + 1 and kept["val_loss"] == pytest.approx(best["val_loss"])
    # The saved model is that epoch's: confident on its own training images, not ~1/3 each.
    files = sorted(str(p) for p in data.glob("*/*.png"))
    probabilities = load_run(result.run_dir).predict(files).probabilities
    assert probabilities.max(axis=1).mean() > 0.6


def test_early_stopping_waits_for_the_warm_up_and_says_why(tmp_path, capsys):
    data = make_folder(tmp_path / "shapes", per_class=6)
    # A learning rate too small to change anything: validation never improves after epoch 1.
    result = fit(data, 3, run_dir=tmp_path / "run", head_epochs=12, head_lr=1e-12,
                 warmup_fraction=0.25, patience=2, finetune_epochs=0, val_fraction=0.34,
                 **{**FAST, "verbose": 2})
    assert [row["phase"] for row in result.history] == ["head"] * 5  # 3 warm-up + 2 patience
    out = capsys.readouterr().out
    assert "head phase stopped early after epoch 5 of 12: val_accuracy has not improved for 2 " \
           "epochs after the warm-up (best of this phase: epoch 1); keeping epoch 1" in out
    assert result.metrics["stopped_early"]["head"]["epoch"] == 5


def test_a_failed_start_does_not_block_the_retry(tmp_path):
    data = make_folder(tmp_path / "shapes", per_class=4)
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        fit(data, 3, run_dir=tmp_path / "run", **{**FAST, "weights": str(tmp_path / "no.h5")})
    retry = fit(data, 3, run_dir=tmp_path / "run", head_epochs=1, finetune_epochs=0,
                val_fraction=0.34, **FAST)
    assert len(retry.history) == 1


@pytest.mark.xdist_group("shapes_run")  # one worker trains the module fixture, not two
def test_rerun_of_a_finished_run_trains_nothing(trained, capsys):
    data, result = trained
    started = time.perf_counter()
    again = fit(data, 3, run_dir=result.run_dir, head_epochs=15, head_lr=1e-2, finetune_epochs=2,
                unfreeze_blocks=1, val_fraction=0.25, **{**FAST, "verbose": 2})
    assert "already holds this finished run; loaded it without training" in capsys.readouterr().out
    assert len(again.history) == len(result.history)
    assert again.val_accuracy == pytest.approx(result.val_accuracy)
    with pytest.raises(ValueError, match="other settings"):
        fit(data, 3, run_dir=result.run_dir, head_epochs=16, head_lr=1e-2, finetune_epochs=2,
            unfreeze_blocks=1, val_fraction=0.25, **FAST)
    assert time.perf_counter() - started < 120


def test_uncached_phases_train_the_whole_network_on_images(tmp_path):
    data = make_folder(tmp_path / "shapes", per_class=8)
    result = fit(data, 3, run_dir=tmp_path / "run", head_epochs=2, finetune_epochs=2,
                 unfreeze_blocks=1, cache_features=False, val_fraction=0.25, keep_backups=True,
                 **FAST)
    assert (result.run_dir / "backup" / "finetune").is_dir()  # kept when asked for
    phases = json.loads(result.paths.phases.read_text())
    assert "finetune_cache" not in phases
    assert "feature_extraction" not in result.metrics["phase_seconds"]
    assert [row["phase"] for row in result.history] == ["head"] * 2 + ["finetune"] * 2
    with pytest.raises(ValueError, match=r"finetune_views=-1"):
        fit(data, 3, run_dir=tmp_path / "bad", finetune_views=-1, **FAST)


def test_each_phase_traces_its_train_step_once(tmp_path, monkeypatch):
    # A trace of the top blocks' train step costs seconds on a CPU; Keras' deferred build
    # would trace it twice per phase (effnet_tl.compat.build_for_training).
    from effnet_tl.train import step

    traced = []
    original = step.replica_train_step

    def counting(model, *args, **kwargs):
        traced.append(model.name)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(step, "replica_train_step", counting)
    data = make_folder(tmp_path / "shapes", per_class=8)
    result = fit(data, 3, run_dir=tmp_path / "run", head_epochs=2, finetune_epochs=2,
                 unfreeze_blocks=1, val_fraction=0.25, **FAST)
    assert [row["phase"] for row in result.history] == ["head"] * 2 + ["finetune"] * 2
    assert len(traced) == 2, traced


def test_the_same_seed_trains_the_same_model(tmp_path):
    # The head's initial weights and dropout come from the seed: without it the head phase,
    # and every decision taken from it, changed from run to run.
    data = make_folder(tmp_path / "shapes", per_class=8)
    settings = dict(head_epochs=2, finetune_epochs=1, unfreeze_blocks=1, val_fraction=0.25,
                    **{**FAST, "augment": "medium"})
    runs = [fit(data, 3, run_dir=tmp_path / f"run{index}", **{**settings, "seed": seed}).history
            for index, seed in enumerate((3, 3, 4))]
    for first, again in zip(runs[0], runs[1]):
        assert again == pytest.approx(first, rel=1e-5), (first, again)
    assert [row["loss"] for row in runs[2]] != pytest.approx([row["loss"] for row in runs[0]])


def test_wrong_num_classes_fails_before_training(tmp_path):
    data = make_folder(tmp_path / "shapes", per_class=3)
    with pytest.raises(ValueError, match=r"num_classes=5 but dataset_dir has 3 class folders"):
        fit(data, 5, run_dir=tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists()


def test_nan_setting_stops_cleanly_and_keeps_last_good_model(tmp_path, capsys):
    data = make_folder(tmp_path / "shapes", per_class=6)
    # An absurd learning rate overflows the head's weights to inf: loss NaN in epoch 1.
    result = fit(data, 3, run_dir=tmp_path / "run", head_epochs=3, finetune_epochs=2,
                 head_lr=1e38, val_fraction=0.34, **FAST)
    assert result.stopped is not None and result.stopped["epoch"] == 0
    assert "Stopping: loss became" in capsys.readouterr().out
    assert not any(row.get("phase") == "finetune" for row in result.history)
    reloaded = keras.saving.load_model(result.paths.model, safe_mode=True)
    assert all(np.isfinite(w).all() for w in reloaded.get_weights())
    assert json.loads(result.paths.report.read_text())["nonfinite_stop"]["epoch"] == 0


def test_arrays_source_imbalance_and_unit_range_guard(tmp_path):
    rng = np.random.default_rng(0)
    counts = {0: 24, 1: 6}
    images, labels = [], []
    for label, count in counts.items():
        colour = np.array(list(COLOURS.values())[label], "float32")
        block = rng.uniform(90, 160, (count, 32, 32, 3)).astype("float32")
        block[:, 8:24, 8:24] = colour
        images.append(block / 255.0)  # the classic mistake: pixels divided by 255
        labels += [label] * count
    images = np.concatenate(images)
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        result = fit((images, np.array(labels)), 2, run_dir=tmp_path / "run", head_epochs=2,
                     finetune_epochs=0, val_fraction=0.25, **FAST)
    assert result.config["pixel_range_action"] == "rescaled"
    train_labels = np.array([0] * 18 + [1] * 4)  # 75 % of each class trains
    expected = class_weights(train_labels, 2)
    got = {int(k): v for k, v in result.config["settings"]["data"]["class_weight"].items()}
    assert got == pytest.approx(expected)
    assert got[1] > 3 * got[0]


RESUME_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from effnet_tl.train import fit
    fit(sys.argv[1], 3, run_dir=sys.argv[2], variant="lite0", weights="imagenet", image_size=32,
        batch_size=4, head_epochs=2, finetune_epochs=5, unfreeze_blocks=2, augment="light",
        early_stopping=False, val_fraction=0.25, seed=0, verbose=2)
""")


@pytest.mark.slow
def test_killed_run_resumes_at_next_epoch(tmp_path):
    data = make_folder(tmp_path / "shapes", per_class=16)
    run_dir = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    history = run_dir / "history.csv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, str(script), str(data), str(run_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 150
    finished = 0
    try:
        # Kill (SIGKILL: no clean-up) once the first fine-tuning epoch (epoch index 2) is done.
        while time.time() < deadline and process.poll() is None:
            if history.exists():
                finished = len(history.read_text().strip().splitlines()) - 1
                if finished >= 3:
                    break
            time.sleep(0.05)
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    finished = len(history.read_text().strip().splitlines()) - 1
    assert 3 <= finished < 7

    rerun = subprocess.run([sys.executable, str(script), str(data), str(run_dir)],
                           capture_output=True, text=True, env=env, timeout=170)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    trained_epochs = [int(line.split()[1].split("/")[0]) for line in rerun.stdout.splitlines()
                      if line.startswith("Epoch ")]
    # Keras counts epochs from 1: the rerun's first epoch is the one after the last finished.
    assert trained_epochs == list(range(finished + 1, 8)), rerun.stdout[-2000:]
    assert "resuming the finetune phase after epoch" in rerun.stdout
    rows = [line.split(",")[0] for line in history.read_text().strip().splitlines()[1:]]
    assert rows == [str(i) for i in range(7)]
    assert keras.saving.load_model(run_dir / "model.keras", safe_mode=True) is not None


MIRRORED_FIT_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import tensorflow as tf
    # Two logical CPUs must be configured before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    from test_fit_end_to_end import make_folder
    from effnet_tl.train import fit

    work = Path(sys.argv[1])
    data = make_folder(work / "shapes", per_class=16)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": strategy.num_replicas_in_sync}
    for cached in (True, False):
        result = fit(data, 3, run_dir=work / f"run-{cached}", strategy=strategy, variant="lite0",
                     weights="imagenet", image_size=32, batch_size=8, head_epochs=12,
                     head_lr=1e-2, finetune_epochs=2, unfreeze_blocks=1, augment="light",
                     cache_features=cached, early_stopping=False, val_fraction=0.25, verbose=2,
                     seed=0)
        phases = json.loads((result.run_dir / "phases.json").read_text())
        out[str(cached)] = {"val": result.val_accuracy, "views": (phases.get("finetune_cache")
                            or {}).get("views", 0), "rows": [r["phase"] for r in result.history],
                            "support": sum(v["support"] for v in
                                           result.metrics["val"]["per_class"].values())}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_fit_under_mirrored_strategy_on_two_cpus_cached_and_not(tmp_path):
    # 48 images: 36 train (not a multiple of the global batch of 8) and 12 validation.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_FIT_SCRIPT, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, timeout=400)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, completed.stdout[-2000:] + completed.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT"):])
    assert out["replicas"] == 2
    assert "2 replicas: every epoch trains on 4 whole batches of 8" in completed.stdout
    assert out["True"]["views"] == 2 and out["False"]["views"] == 0
    for cached in ("True", "False"):
        assert out[cached]["rows"] == ["head"] * 12 + ["finetune"] * 2
        assert out[cached]["support"] == 12  # the report evaluates every validation image
        assert out[cached]["val"] >= 0.75, out
