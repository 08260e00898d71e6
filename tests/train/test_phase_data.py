"""What each phase reads: the fine-tuning cache decision and whole-batch validation."""

import pytest

from effnet_tl.classifier import build_classifier
from effnet_tl.models import custom_variant
from effnet_tl.train.defaults import DataFacts, resolve, validation_batch_size
from effnet_tl.train.feature_cache import feature_bytes
from effnet_tl.train.phase_data import finetune_views
from effnet_tl.train.settings import FitOptions
from effnet_tl.train.surgery import finetune_boundary

TINY = custom_variant(width=0.25, depth=0.25, resolution=32, name="tiny")


def test_finetune_caches_views_only_when_augmentation_survives():
    model = build_classifier(3, variant=TINY, weights=None)
    boundary = finetune_boundary(model, 1)
    per_image = feature_bytes(model.get_layer("backbone").get_layer(boundary).input.shape[1:], 1)

    def views(budget_images, boundary=boundary, **overrides):
        options = FitOptions.from_kwargs(**{"variant": "lite0", "finetune_epochs": 8,
                                            "image_size": 32, "augment": "medium", **overrides})
        settings = resolve(options, DataFacts(num_train=100, num_val=10))
        return finetune_views(settings, model, boundary, num_train=100, num_val=10,
                              budget=per_image * budget_images)

    assert views(1_000) == 4  # default: half of 8 epochs
    assert views(1_000, finetune_views=8) == 8
    assert views(310) == 3  # three of the four wanted views (and validation) fit
    assert views(150) == 0  # only the plain view fits: no cache rather than no augmentation
    assert views(150, augment="none") == 1
    assert views(1_000, finetune_views=0) == 0
    assert views(1_000, cache_features=False) == 0
    assert views(1_000, boundary=finetune_boundary(model, "all")) == 0  # nothing frozen below


def test_validation_batches_split_evenly_over_replicas():
    assert validation_batch_size(32, 100, 1) == 32
    assert validation_batch_size(32, 100, 4) == 32
    assert validation_batch_size(32, 13, 4) == 12
    with pytest.raises(ValueError, match="3 images, fewer than the 4 replicas"):
        validation_batch_size(32, 3, 4)


def test_a_worker_reads_caches_and_trains_on_its_own_files_only(tmp_path):
    # Worker 1 of 2 (two replicas in all): its training files are every other file from the
    # second; it trains in per-replica batches for as many steps as the smaller shard fills,
    # and its cached head features come from its own files only.
    import numpy as np
    from PIL import Image

    from effnet_tl.data import resolve_source
    from effnet_tl.train.cluster import Worker
    from effnet_tl.train.phase_data import PhaseData

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(19):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(
                tmp_path / label / f"{i:02d}.png")
    source = resolve_source(tmp_path, val_fraction=0.25, seed=0)
    model = build_classifier(2, variant=TINY, weights=None)
    settings = resolve(FitOptions.from_kwargs(variant="lite0", image_size=32, batch_size=8,
                                              augment="none"),
                       DataFacts(num_train=len(source.train), num_val=len(source.val),
                                 replicas=2))
    data = PhaseData(source, settings, model=model, replicas=2, in_model_augment=False,
                     finetune_pending=False, worker=Worker(1, 2))
    assert data.train_examples.paths == source.train.paths[1::2]
    assert data.train_batch == 4 and data.steps == (len(source.train) // 2) // 4
    inputs = data.head(model, placement="dataset")
    batches = list(inputs.train.take(inputs.steps))
    assert all(x.shape[0] == 4 for x, _ in batches)  # whole per-replica batches
    # What the cache is computed from: exactly this worker's files.
    cached_labels = np.concatenate([y.numpy().argmax(1) for _, y in data.plain_train])
    assert sorted(cached_labels.tolist()) == sorted(data.train_examples.labels.tolist())
    # The per-epoch validation reads this worker's share; the decisions and report all of it.
    assert data.epoch_val_batch == data.val_batch // 2
    assert sum(int(y.shape[0]) for _, y in data.val_images) == len(source.val)
    assert sum(int(y.shape[0]) for _, y in data.epoch_val_images) == \
        len(range(1, len(source.val), 2))
