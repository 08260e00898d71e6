"""How :func:`effnet_tl.fit` fills the knobs left at ``None``, from facts about the data.

Every rule is a small pure function of the dataset size, the variant and the replicas, so it
can be read and tested on its own; :func:`resolve` applies them all once, and the resolved
values go to ``config.json``.

Example:
    >>> from effnet_tl.train.settings import FitOptions
    >>> facts = DataFacts(num_train=500, num_val=100, replicas=1, device_policy="float32")
    >>> settings = resolve(FitOptions.from_kwargs(variant="lite0", budget="fast"), facts)
    >>> settings.model.image_size, settings.data.batch_size, settings.recipe.unfreeze_blocks
    ((224, 224), 32, 2)
"""

from __future__ import annotations

import dataclasses
import math

from effnet_tl.models import VariantSpec, get_variant
from effnet_tl.models.efficientnet import scaled_stage_layout, top_filters
from effnet_tl.train.settings import FitOptions
from effnet_tl.train.tpu import tpu_batch_size

__all__ = [
    "DataFacts",
    "block_names",
    "default_batch_size",
    "default_finetune_epochs",
    "default_finetune_views",
    "default_unfreeze_blocks",
    "inference_batch_size",
    "resolve",
    "unfrozen_block_count",
    "validation_batch_size",
    "warmup_epochs",
]

# Above this, the head's cached features would not comfortably fit in memory.
FEATURE_CACHE_BYTES = 2**30


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the defaults depend on: split sizes, replicas, the device's dtype policy, classes."""

    num_train: int
    num_val: int
    replicas: int = 1
    device_policy: str = "float32"
    imbalanced: bool = False
    balanced_weights: dict | None = None
    tpu: bool = False


def default_batch_size(num_train: int, replicas: int = 1) -> int:
    """32 per replica (16 for tiny datasets, so an epoch still has several steps).

    Example:
        >>> default_batch_size(100), default_batch_size(1000, replicas=4)
        (16, 128)
    """
    per_replica = 16 if num_train < 320 else 32
    return per_replica * max(1, replicas)


def default_finetune_epochs(num_train: int) -> int:
    """More passes over small datasets, fewer over large ones (12 down to 3)."""
    if num_train <= 1_000:
        return 12
    if num_train <= 5_000:
        return 8
    if num_train <= 50_000:
        return 5
    return 3


def default_unfreeze_blocks(num_train: int, num_blocks: int) -> int:
    """Top fraction of blocks to unfreeze: an eighth below 2k images, a quarter, half above 20k.

    Small datasets overfit when much is unfrozen, and every unfrozen block costs a backward
    pass (on CPU a 5x5 depthwise filter gradient costs ~7x its forward pass). Measured on
    digits (1.3k images, Lite0, 64 px, 4+4 epochs): 2 instead of 6 blocks gave about one
    point less test accuracy in two thirds of the time. Large datasets gain from adapting more.
    """
    if num_train < 2_000:
        fraction = 0.125
    elif num_train < 20_000:
        fraction = 0.25
    else:
        fraction = 0.5
    return max(1, min(num_blocks, math.ceil(fraction * num_blocks)))


def default_finetune_views(finetune_epochs: int) -> int:
    """Views of the training set cached fine-tuning cycles through: half the epochs, >= 2."""
    return max(2, math.ceil(finetune_epochs / 2))


def default_head_epochs(num_train: int, batch_size: int, cached: bool) -> int:
    """On cached features an epoch costs milliseconds: ~400 steps (10-60 epochs); else 3."""
    if not cached:
        return 3
    steps = max(1, math.ceil(num_train / batch_size))
    return min(60, max(10, math.ceil(400 / steps)))


def warmup_epochs(epochs: int, warmup_fraction: float) -> int:
    """Whole epochs the learning rate is still rising in: early stopping waits for them.

    Example:
        >>> warmup_epochs(60, 0.1), warmup_epochs(4, 0.1), warmup_epochs(4, 0.0)
        (6, 1, 0)
    """
    return min(epochs, math.ceil(epochs * warmup_fraction))


def block_names(variant) -> list[str]:
    """The backbone's MBConv/FusedMBConv block names, bottom to top (no model is built).

    Example:
        >>> block_names("b0")[:3], len(block_names("b0"))
        (['block1a', 'block2a', 'block2b'], 16)
    """
    return [block["name"] for block in scaled_stage_layout(get_variant(variant))]


def unfrozen_block_count(unfreeze_blocks: int | str, blocks: list[str]) -> int:
    """How many top blocks ``unfreeze_blocks`` (a count, a block name or ``"all"``) means.

    Example:
        >>> unfrozen_block_count("block2b", ["block1a", "block2a", "block2b"])
        1
    """
    if unfreeze_blocks == "all":
        return len(blocks)
    if isinstance(unfreeze_blocks, str) and unfreeze_blocks in blocks:
        return len(blocks) - blocks.index(unfreeze_blocks)
    if isinstance(unfreeze_blocks, int) and not isinstance(unfreeze_blocks, bool) \
            and 0 <= unfreeze_blocks <= len(blocks):
        return unfreeze_blocks
    raise ValueError(
        f"unfreeze_blocks must be 0..{len(blocks)}, 'all' or a block name ({blocks[0]} ... "
        f"{blocks[-1]}). Received: unfreeze_blocks={unfreeze_blocks!r}")


def inference_batch_size(batch_size: int, image_size: tuple[int, int]) -> int:
    """Batch for passes that train nothing (cached features, evaluation): bigger is faster.

    About 2 megapixels per batch (256 images at 64 px: 1.7x the images/s of batch 32 for
    Lite0 on 2 CPU cores), never below the training batch.

    Example:
        >>> inference_batch_size(32, (64, 64)), inference_batch_size(32, (224, 224))
        (256, 32)
    """
    height, width = image_size
    fit_pixels = 2 ** max(0, math.floor(math.log2(max(1, 2**21 // (height * width)))))
    return max(batch_size, min(256, fit_pixels))


def validation_batch_size(batch_size: int, num_val: int, replicas: int) -> int:
    """Batch of the per-epoch validation: whole batches that split evenly over replicas.

    With several replicas, a partial last batch gives some replica an empty or uneven share:
    Keras' first-batch build needs even shares, and oneDNN's CPU convolution returns the wrong
    shape for an empty batch (TF 2.21; fine with TF_ENABLE_ONEDNN_OPTS=0).

    Example:
        >>> validation_batch_size(32, 9, 1), validation_batch_size(32, 9, 2)
        (32, 8)
    """
    if replicas <= 1:
        return batch_size
    fitting = min(batch_size, replicas * (num_val // replicas))
    if fitting < replicas:
        raise ValueError(f"the validation split has {num_val} images, fewer than the {replicas} "
                         "replicas that each need one; use a larger val_fraction or a val/ folder")
    return fitting


def _head_feature_bytes(spec, image_size, extra_blocks: int) -> int:
    # Pooled features are a few KB per image; feature maps (extra blocks) can be large.
    per_image = top_filters(spec) * 4
    if extra_blocks:
        per_image *= math.ceil(image_size[0] / 32) * math.ceil(image_size[1] / 32)
    return per_image


def resolve(options: FitOptions, facts: DataFacts) -> FitOptions:
    """``options`` with every ``None`` knob decided from ``facts`` (``run`` left as given)."""
    model, data, recipe = options.model, options.data, options.recipe
    spec = get_variant(model.variant)
    image_size = model.image_size or (spec.resolution, spec.resolution)
    batch_size = data.batch_size or default_batch_size(facts.num_train, facts.replicas)
    if facts.tpu:  # static, evenly split batches of at least 8 rows per core
        batch_size = tpu_batch_size(batch_size, replicas=facts.replicas)
    cache = recipe.cache_features
    if cache is None:
        # Not on a TPU: the cached passes run the frozen layers outside strategy.run, which
        # there means the host's CPU; training on images keeps the whole network on the TPU.
        cache = not facts.tpu and facts.num_train * _head_feature_bytes(
            spec, image_size, model.extra_blocks) < FEATURE_CACHE_BYTES
    blocks = block_names(spec)
    unfreeze = recipe.unfreeze_blocks
    # None with the "best" budget: decided once the head has trained (effnet_tl.train.adaptive).
    adaptive = unfreeze is None and recipe.budget != "fast"
    if unfreeze is None and not adaptive:
        unfreeze = default_unfreeze_blocks(facts.num_train, len(blocks))
    elif unfreeze is not None:
        unfreeze = unfrozen_block_count(unfreeze, blocks)
    finetune_epochs = recipe.finetune_epochs
    if finetune_epochs is None and not adaptive:  # else decided with the depth (adaptive.py)
        finetune_epochs = default_finetune_epochs(facts.num_train)
    head_epochs = recipe.head_epochs
    if head_epochs is None:
        head_epochs = default_head_epochs(facts.num_train, batch_size, cache)
    scale = batch_size / 32  # linear learning-rate scaling with the global batch
    class_weight = data.class_weight
    if class_weight == "balanced" or (class_weight == "if_imbalanced" and facts.imbalanced):
        class_weight = facts.balanced_weights or "none"
    elif class_weight == "if_imbalanced":
        class_weight = "none"
    return dataclasses.replace(
        options,
        model=dataclasses.replace(
            # A custom spec stays a spec (its name alone could not rebuild it).
            model, variant=model.variant if isinstance(model.variant, VariantSpec) else spec.name,
            image_size=image_size,
            dropout_rate=spec.dropout_rate if model.dropout_rate is None else model.dropout_rate,
            mixed_precision=model.mixed_precision or facts.device_policy),
        data=dataclasses.replace(data, batch_size=batch_size, class_weight=class_weight),
        recipe=dataclasses.replace(
            recipe, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
            unfreeze_blocks=unfreeze, cache_features=bool(cache),
            head_lr=recipe.head_lr or 2e-3 * scale,
            finetune_lr=recipe.finetune_lr or (None if adaptive else 1e-4 * scale),
            patience=recipe.patience if recipe.patience is not None
            else max(3, (finetune_epochs or default_finetune_epochs(facts.num_train)) // 3)),
    )
