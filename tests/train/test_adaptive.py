"""fit's decisions follow the data: flips off when mirroring changes the label, every block
for a few epochs where frozen features already serve, the top 5/8 for longer where they do
not. Real files, real Lite0 ImageNet weights, tiny sizes."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw

from effnet_tl.train import fit
from effnet_tl.train.adaptive import (
    FAR_FINETUNE_EPOCHS,
    NEAR_FINETUNE_EPOCHS,
    decide,
    domain_for,
    schedule_for,
    unfreeze_for,
)
from effnet_tl.train.defaults import default_unfreeze_blocks

from .test_fit_end_to_end import make_folder

TINY_FIT = dict(variant="lite0", weights="imagenet", image_size=64, batch_size=8, head_epochs=12,
                head_lr=1e-2, finetune_epochs=1, val_fraction=0.25, verbose=0, seed=0)
LITE0_BLOCKS = 16


def _arrows(root: Path, per_class=16, size=64, seed=0) -> Path:
    """Left- and right-pointing arrows at random positions and lengths on noise."""
    rng = np.random.default_rng(seed)
    for label in ("left", "right"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(100, 150, (size, size, 3)).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            y = int(rng.integers(20, 44))
            x0, x1 = int(rng.integers(6, 16)), int(rng.integers(46, 58))
            tip, tail = (x0, x1) if label == "left" else (x1, x0)
            step = 14 if label == "left" else -14
            draw.line([(tail, y), (tip, y)], fill=(20, 20, 20), width=5)
            draw.polygon([(tip, y), (tip + step, y - 11), (tip + step, y + 11)], fill=(20, 20, 20))
            image.save(root / label / f"{i:03d}.png")
    return root


def _faint_stripes(root: Path, per_class=16, size=64, seed=0) -> Path:
    """Three classes told apart only by faint stripes (horizontal, vertical, none) under heavy
    noise: ImageNet features barely see them, so the frozen-feature head stays weak."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None] * np.ones((1, size))
    patterns = {"horizontal": np.sin(rows * 1.3), "vertical": np.sin(rows.T * 1.3),
                "plain": np.zeros((size, size))}
    for label, pattern in patterns.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = 128 + 6 * pattern + rng.normal(0, 40, (size, size))
            grey = np.clip(image, 0, 255).astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / label / f"{i:03d}.png")
    return root


def test_rules_order_domains_and_depth():
    assert [domain_for(e) for e in (0.0, 0.01, 0.011, 0.4)] == ["near", "near", "far", "far"]
    near, far = (unfreeze_for(d, num_train=500, num_blocks=16) for d in ("near", "far"))
    assert near == 16 and far == 10
    # Large data already unfreezes more by size; far data never gets less than that.
    assert unfreeze_for("far", num_train=50_000, num_blocks=16) == 10
    assert unfreeze_for("far", num_train=50_000, num_blocks=40) == 25
    # Near data: every block, briefly; far data: fewer blocks, for longer.
    (far_epochs, far_rate), (near_epochs, near_rate) = (schedule_for(d) for d in ("far", "near"))
    assert near_epochs < far_epochs and near_rate == far_rate


def test_a_head_without_validation_accuracy_counts_as_far():
    # The cheaper mistake: every block for 3 epochs cost far data 14-19 points.
    settings = SimpleNamespace(
        data=SimpleNamespace(augment="medium", batch_size=64),
        recipe=SimpleNamespace(unfreeze_blocks=None, finetune_epochs=None, finetune_lr=None,
                               finetune_views=None))
    rows = [{"epoch": 1, "val_accuracy": float("nan")}, {"epoch": 2}]
    decisions = decide(settings, None, SimpleNamespace(num_train=500), rows, num_blocks=16)
    assert decisions["domain"] == {"name": "far", "head_val_accuracy": None}
    assert decisions["unfreeze_blocks"] == 10 and decisions["finetune_views"] == 6
    assert decisions["finetune_lr"] == 2 * schedule_for("far")[1]  # batch 64: twice the rate


def test_mirror_sensitive_labels_turn_flips_off(tmp_path):
    data = _arrows(tmp_path / "arrows")
    result = fit(data, 2, run_dir=tmp_path / "run", **TINY_FIT)
    flips = result.metrics["decisions"]["flips"]
    assert flips["kept"] is False, flips
    assert flips["transformed_val_accuracy"] < flips["val_accuracy"] - 0.3
    # The evidence recorded: the head trusts the true class much less in mirrored arrows.
    assert flips["nll_increase"] > 0.3, flips
    config = json.loads(result.paths.config.read_text())
    assert config["decisions"]["flips"]["kept"] is False
    assert config["settings"]["data"]["augment"] == "auto"  # as asked; the decision beside it


def test_near_domain_fine_tunes_every_block_briefly_and_keeps_flips(tmp_path):
    data = make_folder(tmp_path / "squares", per_class=12, size=64)
    result = fit(data, 3, run_dir=tmp_path / "run", **{**TINY_FIT, "finetune_epochs": None})
    decisions = result.metrics["decisions"]
    assert decisions["domain"]["name"] == "near" and decisions["flips"]["kept"] is True
    assert decisions["unfreeze_blocks"] == LITE0_BLOCKS
    assert decisions["finetune_epochs"] == NEAR_FINETUNE_EPOCHS < FAR_FINETUNE_EPOCHS
    assert 1 <= [row["phase"] for row in result.history].count("finetune") <= NEAR_FINETUNE_EPOCHS


def test_far_domain_unfreezes_more(tmp_path):
    data = _faint_stripes(tmp_path / "stripes")
    result = fit(data, 3, run_dir=tmp_path / "run", **{**TINY_FIT, "finetune_epochs": None})
    decisions = result.metrics["decisions"]
    assert decisions["domain"]["name"] == "far", decisions
    assert decisions["unfreeze_blocks"] > default_unfreeze_blocks(36, LITE0_BLOCKS)
    assert decisions["finetune_epochs"] == FAR_FINETUNE_EPOCHS
    assert 1 <= [row["phase"] for row in result.history].count("finetune") <= FAR_FINETUNE_EPOCHS
    phases = json.loads(result.paths.phases.read_text())
    assert phases["decisions"] == decisions  # a resumed run reuses them
    config = json.loads(result.paths.config.read_text())
    assert config["settings"]["recipe"]["finetune_epochs"] is None  # as asked; decided beside it


def _gratings(root: Path, per_class=24, size=64, seed=0) -> Path:
    """Two classes told apart by spatial frequency alone (8 vs 12 cycles per image width), at
    random orientation and phase: mirroring and rotating keep the class, zooming does not."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for label, cycles in (("coarse", 8.0), ("fine", 12.0)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            theta = rng.uniform(0, np.pi)
            wave = np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta))
                          + rng.uniform(0, 2 * np.pi))
            grey = np.clip(128 + 100 * wave, 0, 255).astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / label / f"{i:03d}.png")
    return root


def test_frequency_classes_turn_zoom_off_and_keep_flips_and_rotation(tmp_path):
    result = fit(_gratings(tmp_path / "gratings"), 2, run_dir=tmp_path / "run", **TINY_FIT)
    decisions = result.metrics["decisions"]
    assert decisions["zoom"]["kept"] is False, decisions
    assert decisions["flips"]["kept"] is True, decisions
    config = json.loads(result.paths.config.read_text())
    assert config["decisions"]["zoom"] == decisions["zoom"]
    # Rotation is not probed (a head trained upright changes its answers on rotated images
    # whatever their class), so fine-tuning rotates these gratings as "medium" does.
    assert "rotation" not in decisions


def test_explicit_settings_win(tmp_path):
    data = _arrows(tmp_path / "arrows", per_class=8)
    result = fit(data, 2, run_dir=tmp_path / "run", augment="medium", unfreeze_blocks=1,
                 **{**TINY_FIT, "head_epochs": 2})
    assert result.metrics["decisions"] in (None, {})
    assert [row["phase"] for row in result.history].count("finetune") == 1


def test_a_time_budget_ends_each_phase_after_the_epoch_that_uses_it_up(tmp_path):
    data = make_folder(tmp_path / "squares", per_class=8, size=64)
    result = fit(data, 3, run_dir=tmp_path / "run", budget=0.001,
                 **{**TINY_FIT, "finetune_epochs": 3})
    assert [row["phase"] for row in result.history] == ["head", "finetune"]
    for phase in ("head", "finetune"):
        assert "the time budget ends" in result.metrics["stopped_early"][phase]["reason"]
    assert result.paths.model.exists() and result.val_accuracy is not None


def test_probes_look_at_every_kth_validation_image_beyond_the_cap():
    import tensorflow as tf

    from effnet_tl.train.adaptive import PROBE_IMAGES, probe_images

    images = tf.zeros([2500, 2, 2, 3])
    labels = tf.range(2500)
    val = tf.data.Dataset.from_tensor_slices((images, labels)).batch(64)
    kept = np.concatenate([y.numpy() for _, y in probe_images(val, 2500)])
    assert len(kept) <= PROBE_IMAGES and np.all(np.diff(kept) == 3) and kept[0] == 0
    assert probe_images(val, 900) is val
