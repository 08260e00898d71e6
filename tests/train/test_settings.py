"""fit's settings: one parameter list, validated with errors that echo the value; defaults
resolved from the data; the recorded config is stable across processes."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest

from effnet_tl.train import fit
from effnet_tl.train.defaults import (
    DataFacts,
    default_batch_size,
    default_finetune_epochs,
    default_unfreeze_blocks,
    resolve,
    unfrozen_block_count,
    warmup_epochs,
)
from effnet_tl.train.settings import GROUPS, FitOptions, describe_augment


def _settings(num_train, **overrides):
    options = FitOptions.from_kwargs(**{"variant": "lite0", "budget": "fast", **overrides})
    return resolve(options, DataFacts(num_train=num_train, num_val=num_train // 4))


def test_the_parameter_list_exists_once_and_fit_exposes_it():
    fields = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(fields) == len(set(fields))  # no keyword in two groups
    signature = inspect.signature(fit)
    assert list(signature.parameters)[2:] == fields
    for cls in GROUPS.values():
        for field in dataclasses.fields(cls):
            assert signature.parameters[field.name].default == field.default
            assert field.metadata["help"] and f"    {field.name}: " in fit.__doc__


def test_unknown_keyword_echoes_it_and_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown argument 'unfreeze'.*'unfreeze_blocks'.*"
                                        r"accepted: variant, weights"):
        FitOptions.from_kwargs(unfreeze="all")


@pytest.mark.parametrize("kwargs, echoed", [
    (dict(head_epochs=-1), "head_epochs=-1"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(head_lr=0), "head_lr=0"),
    (dict(warmup_fraction=1.5), "warmup_fraction=1.5"),
    (dict(pixel_range="fix"), "pixel_range='fix'"),
    (dict(class_weight="auto"), "class_weight='auto'"),
    (dict(monitor="accuracy"), "monitor='accuracy'"),
    (dict(resize="crop-ish"), "resize='crop-ish'"),
    (dict(image_size=(0, 32)), "image_size=(0, 32)"),
    (dict(cache_features="auto"), "cache_features='auto'"),
    (dict(top_k=(0,)), "top_k=(0,)"),
    (dict(download="no"), "download='no'"),
])
def test_bad_values_echo_the_value_and_what_is_accepted(kwargs, echoed):
    with pytest.raises(ValueError, match=r"(must be|accepted)") as raised:
        FitOptions.from_kwargs(**kwargs)
    assert echoed in str(raised.value)


def test_defaults_adapt_to_dataset_size_and_variant():
    small, large = _settings(500), _settings(100_000)
    assert small.model.image_size == (224, 224)  # lite0's resolution
    assert small.model.dropout_rate == pytest.approx(0.2)
    assert small.recipe.finetune_epochs > large.recipe.finetune_epochs
    assert small.recipe.unfreeze_blocks < large.recipe.unfreeze_blocks <= 16
    assert small.data.batch_size == 32 and _settings(100).data.batch_size == 16
    assert small.recipe.finetune_lr < small.recipe.head_lr / 5  # a much lower fine-tuning rate
    assert small.recipe.cache_features
    # ~400 head steps on cached features: more epochs for fewer images (500 / 32 -> 16 steps).
    assert small.recipe.head_epochs == 25 and large.recipe.head_epochs == 10


def test_the_best_budget_leaves_depth_and_rate_to_the_data():
    best = _settings(500, budget="best")
    assert best.recipe.unfreeze_blocks is None and best.recipe.finetune_lr is None
    assert best.recipe.finetune_epochs is None  # the schedule is decided with the depth
    assert _settings(500, budget="best", finetune_epochs=5).recipe.finetune_epochs == 5
    assert best.data.augment == "auto"  # flips decided after the head (effnet_tl.train.adaptive)
    assert _settings(500, budget="best", unfreeze_blocks=3).recipe.finetune_lr == 1e-4
    assert _settings(500, budget=90).recipe.budget == 90
    with pytest.raises(ValueError, match=r"budget='slow'"):
        _settings(500, budget="slow")


def test_every_knob_is_overridable_and_block_names_become_counts():
    s = _settings(500, batch_size=8, head_epochs=2, finetune_epochs=1, unfreeze_blocks="block6a",
                  head_lr=0.1, finetune_lr=0.01, image_size=(48, 64), cache_features=False,
                  patience=7)
    assert (s.data.batch_size, s.recipe.head_epochs, s.recipe.finetune_epochs) == (8, 2, 1)
    assert s.recipe.unfreeze_blocks == 5  # block6a-6d and block7a of lite0's 16 blocks
    assert (s.recipe.head_lr, s.recipe.finetune_lr, s.model.image_size) == (0.1, 0.01, (48, 64))
    assert (s.recipe.cache_features, s.recipe.patience) == (False, 7)
    assert s.to_dict()["model"]["image_size"] == [48, 64]
    assert _settings(500, unfreeze_blocks="all").recipe.unfreeze_blocks == 16
    with pytest.raises(ValueError, match=r"block1a \.\.\. block7a.*unfreeze_blocks='block99z'"):
        _settings(500, unfreeze_blocks="block99z")


def test_default_helpers_are_monotone():
    sizes = [100, 1_000, 5_000, 50_000, 500_000]
    epochs = [default_finetune_epochs(n) for n in sizes]
    assert epochs == sorted(epochs, reverse=True)
    blocks = [default_unfreeze_blocks(n, 16) for n in sizes]
    assert blocks == sorted(blocks) and blocks[0] == 2 and blocks[-1] == 8
    assert default_batch_size(1000, replicas=4) == 128
    assert unfrozen_block_count(0, ["a", "b"]) == 0
    assert [warmup_epochs(10, f) for f in (0.0, 0.05, 0.1, 0.25, 1.0)] == [0, 1, 1, 3, 10]


def test_class_weights_follow_the_data_unless_given():
    weights = {0: 0.6, 1: 3.0}
    facts = dict(num_train=100, num_val=20, balanced_weights=weights)
    options = FitOptions.from_kwargs(variant="lite0")
    assert resolve(options, DataFacts(**facts, imbalanced=True)).data.class_weight == weights
    assert resolve(options, DataFacts(**facts, imbalanced=False)).data.class_weight == "none"
    forced = FitOptions.from_kwargs(variant="lite0", class_weight="balanced")
    assert resolve(forced, DataFacts(**facts)).data.class_weight == weights


def test_augment_description_is_stable_for_keras_layers():
    def layers():
        return [keras.layers.RandomRotation(0.1, seed=1), keras.layers.RandomContrast(0.2)]

    first, second = describe_augment(layers()), describe_augment(layers())
    assert first == second  # no object addresses: a resumed run is "the same settings"
    assert first[0]["layer"] == "RandomRotation" and first[0]["config"]["seed"] == 1
    assert describe_augment(np.zeros(1))["object"] == "numpy.ndarray"
