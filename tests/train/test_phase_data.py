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
