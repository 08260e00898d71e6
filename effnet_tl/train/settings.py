"""Every knob of :func:`effnet_tl.fit`, written once.

Four frozen groups: :class:`ModelSettings` (what is built), :class:`DataSettings` (what it
reads), :class:`RecipeSettings` (how it trains) and :class:`RunSettings` (where and how loudly
it runs). Each field carries its default and a one-line description; ``fit``'s keyword
arguments and signature, its docstring's argument list, ``config.json`` and the ``effnet-tl
fit`` flags are all derived from these classes. ``None`` means "chosen from the data"
(:mod:`effnet_tl.train.defaults` decides, and ``config.json`` records the decision).

Example:
    >>> options = FitOptions.from_kwargs(variant="lite0", head_epochs=3)
    >>> options.model.variant, options.recipe.head_epochs, options.data.augment
    ('lite0', 3, 'auto')
    >>> FitOptions.from_kwargs(epochs=3)
    Traceback (most recent call last):
    ...
    TypeError: fit() got an unknown argument 'epochs' (did you mean 'head_epochs' or 'finetune_epochs'?); accepted: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
from typing import Any

# Light imports only: the command line builds its flags from this module before (and
# without) importing TensorFlow, so `effnet-tl fit --help` and usage errors are instant.
from effnet_tl.sizes import RESIZE_POLICIES

__all__ = [
    "DataSettings",
    "FitOptions",
    "ModelSettings",
    "RecipeSettings",
    "RunSettings",
    "describe_augment",
]

CLASS_WEIGHT_CHOICES = ("if_imbalanced", "balanced", "none")
PIXEL_RANGE_CHOICES = ("rescale", "warn", "ignore")
MONITOR_CHOICES = ("val_accuracy", "val_loss")
BUDGET_LEVELS = ("best", "fast")
MIXED_PRECISION_CHOICES = ("float32", "mixed_float16", "mixed_bfloat16")


def knob(default, help: str, **cli) -> Any:
    """A settings field: its default, a one-line description, and CLI hints (type, choices;
    ``cli_help``: the description worded for the command line, where only names and numbers
    can be given)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def _fail(name: str, value, accepted: str) -> None:
    raise ValueError(f"{name} must be {accepted}. Received: {name}={value!r}")


def _count(name, value, *, minimum=0, optional=True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}" + (" or None (chosen from the data)"
                                                        if optional else ""))


def _rate(name, value, *, low=0.0, high=1.0, optional=False, open_high=True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value < high if open_high else low <= value <= high):
        _fail(name, value, f"a number in [{low}, {high}{')' if open_high else ']'}"
              + (" or None (chosen from the data)" if optional else ""))


def _choice(name, value, choices) -> None:
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The classifier: backbone variant, weights, input size, head regularisation."""

    variant: Any = knob("b0", "backbone: b0-b7, v2-b0..v2-l, lite0-lite4 (effnet-tl variants), "
                        "or a VariantSpec such as custom_variant(...)",
                        cli_help="backbone: b0-b7, v2-b0..v2-l, lite0-lite4 (all listed by "
                        "'effnet-tl variants')")
    weights: str | None = knob("imagenet", "'imagenet', None (random init) or a weights file",
                               cli_help="imagenet, none (random init) or a weights file")
    image_size: int | tuple[int, int] | None = knob(
        None, "input side in pixels, or (height, width); None: the variant's resolution",
        cli_help="input side in pixels, or HEIGHT,WIDTH")
    dropout_rate: float | None = knob(None, "dropout before the Dense layer; None: the "
                                      "variant's rate", type=float)
    drop_path_rate: float = knob(0.2, "stochastic depth of the backbone's last block", type=float)
    extra_blocks: int = knob(0, "extra MBConv blocks on top of the backbone, trained from "
                             "scratch", type=int)
    mixed_precision: str | None = knob(
        None, "Keras dtype policy; None: float32 on CPU, mixed_float16 on GPU, mixed_bfloat16 "
        "on TPU", choices=MIXED_PRECISION_CHOICES)

    def __post_init__(self):
        from effnet_tl.models import get_variant

        get_variant(self.variant)  # an unknown variant fails now, listing the known ones
        size = self.image_size
        if size is not None:
            from effnet_tl.sizes import image_size_pair

            object.__setattr__(self, "image_size", image_size_pair(size))
        _rate("dropout_rate", self.dropout_rate, optional=True)
        _rate("drop_path_rate", self.drop_path_rate)
        _count("extra_blocks", self.extra_blocks, optional=False)
        if self.mixed_precision is not None:
            _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION_CHOICES)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """How images become batches: split, batch size, resizing, augmentation, checks."""

    batch_size: int | None = knob(None, "global batch; None: 32 per replica (16 below 320 "
                                  "images)", type=int)
    augment: Any = knob("auto", "fine-tuning augmentation: auto (the medium preset without the "
                        "flips or zoom that change the answer), none, light, medium, "
                        "heavy, an AugmentSpec, Keras layers or an albumentations pipeline",
                        cli_help="fine-tuning augmentation: auto (the medium preset without "
                        "the flips or zoom that change the answer), or a preset")
    resize: str = knob("center_crop", "how images reach image_size", choices=RESIZE_POLICIES,
                       cli_help="how images reach the input size")
    val_fraction: float = knob(0.2, "share of each class held out for validation when the "
                               "data has no val split", type=float)
    seed: int = knob(0, "seeds the split, shuffling, augmentation and initialisation "
                     "(keras.utils.set_random_seed)", type=int)
    class_weight: str | dict = knob(
        "if_imbalanced", "'if_imbalanced' (balanced weights when the largest/smallest class "
        "ratio exceeds 3), 'balanced', 'none', or a {class index: weight} dict",
        choices=CLASS_WEIGHT_CHOICES, cli_help="if_imbalanced (balanced weights when the "
        "largest/smallest class ratio exceeds 3), balanced or none")
    pixel_range: str = knob("rescale", "images that look like [0, 1]: 'rescale' to [0, 255] "
                            "with a warning, 'warn' only, or 'ignore'", choices=PIXEL_RANGE_CHOICES)

    def __post_init__(self):
        _count("batch_size", self.batch_size, minimum=1)
        _choice("resize", self.resize, RESIZE_POLICIES)
        _rate("val_fraction", self.val_fraction)
        _count("seed", self.seed, optional=False)
        if not isinstance(self.class_weight, dict):
            _choice("class_weight", self.class_weight, CLASS_WEIGHT_CHOICES)
        _choice("pixel_range", self.pixel_range, PIXEL_RANGE_CHOICES)


@dataclasses.dataclass(frozen=True)
class RecipeSettings:
    """The two phases: epochs, what is unfrozen, learning rates, caching, early stopping."""

    head_epochs: int | None = knob(None, "head-phase epochs; None: ~400 steps (10-60 epochs) on "
                                   "cached features, else 3", type=int)
    finetune_epochs: int | None = knob(None, "fine-tuning epochs (0 skips the phase); None: 6 "
                                       "for data far from ImageNet, 3 near it (by size with a "
                                       "set unfreeze_blocks or budget 'fast': 12 (<=1k images) "
                                       "... 3 (>50k))", type=int)
    unfreeze_blocks: int | str | None = knob(
        None, "top backbone blocks to fine-tune: a count, a block name (block6a) or 'all'; None: "
        "decided from the frozen-feature head's validation error (budget 'fast': by dataset "
        "size)")
    head_lr: float | None = knob(None, "peak AdamW rate of the head phase; None: 2e-3 x "
                                 "batch/32", type=float)
    finetune_lr: float | None = knob(None, "peak AdamW rate of fine-tuning; None: 6e-4 x "
                                     "batch/32 (with a set unfreeze_blocks or budget 'fast': "
                                     "1e-4 x batch/32)", type=float)
    warmup_fraction: float = knob(0.1, "linear warm-up share of each phase before the cosine "
                                  "decay; early stopping waits for its end", type=float)
    weight_decay: float = knob(1e-2, "AdamW decoupled weight decay", type=float)
    label_smoothing: float = knob(0.1, "label smoothing of the crossentropy target", type=float)
    cache_features: bool | None = knob(
        None, "train on the cached output of frozen layers; None: when the head's features fit "
        "in 1 GiB", type=bool)
    finetune_views: int | None = knob(
        None, "cached views of the training set that fine-tuning cycles through (0: no cache); "
        "None: half the fine-tuning epochs, at least 2, as many as fit in memory", type=int)
    patience: int | None = knob(None, "epochs without improvement, after the warm-up, before a "
                                "phase stops; None: max(3, epochs / 3)", type=int)
    early_stopping: bool = knob(True, "stop a phase early when validation stops improving",
                                type=bool)
    monitor: str = knob("val_accuracy", "what picks the kept epoch (ties broken by the other "
                        "metric) and drives early stopping", choices=MONITOR_CHOICES)
    budget: str | float = knob(
        "best", "'best' (unfreeze as much as the data needs), 'fast' (the top blocks by "
        "dataset size), or seconds: 'best' that stops training when the time is up")

    def __post_init__(self):
        for name in ("head_epochs", "finetune_epochs", "finetune_views", "patience"):
            _count(name, getattr(self, name))
        unfreeze = self.unfreeze_blocks
        if unfreeze is not None and not isinstance(unfreeze, str):
            _count("unfreeze_blocks", unfreeze)
        for name in ("head_lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value > 0):
                _fail(name, value, "a number > 0 or None (chosen from the data)")
        _rate("warmup_fraction", self.warmup_fraction, open_high=False)
        _rate("weight_decay", self.weight_decay, high=1.0, open_high=False)
        _rate("label_smoothing", self.label_smoothing)
        if self.cache_features not in (None, True, False):
            _fail("cache_features", self.cache_features, "True, False or None (chosen from the data)")
        if not isinstance(self.early_stopping, bool):
            _fail("early_stopping", self.early_stopping, "True or False")
        _choice("monitor", self.monitor, MONITOR_CHOICES)
        if not (self.budget in BUDGET_LEVELS or (
                isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool)
                and self.budget > 0)):
            _fail("budget", self.budget, "'best', 'fast' or a number of seconds > 0")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Where the run folder and tfds data live, how the run behaves; not part of "the same run"."""

    run_dir: Any = knob(None, "the run folder; None: runs_root/name",
                        cli_help="the run folder; None: RUNS_ROOT/NAME")
    runs_root: Any = knob("runs", "parent of the default run folder")
    name: str | None = knob(None, "run folder name; None: <dataset>-<variant>")
    data_dir: Any = knob(None, "TensorFlow Datasets folder for a tfds:NAME dataset; None: "
                         "$TFDS_DATA_DIR or ~/tensorflow_datasets")
    download: bool = knob(True, "download and prepare a tfds:NAME dataset missing from "
                          "data_dir, as tfds.load does (off: fail at once, naming the `tfds "
                          "build` command)", type=bool,
                          cli_help="download and prepare a tfds:NAME dataset missing from "
                          "DATA_DIR, as tfds.load does (off: fail at once, naming the `tfds "
                          "build` command)")
    strategy: Any = knob(None, "where to train: auto, cpu, gpu, mirrored, tpu, multiworker, "
                         "or a tf.distribute.Strategy; None: auto, which is "
                         "multiworker when TF_CONFIG names several workers, else a TPU when one "
                         "is found, else the GPUs or the CPU",
                         cli_help="where to train: auto, cpu, gpu, mirrored, tpu or multiworker")
    tpu_address: str | None = knob(None, "the TPU to use: a name, grpc://host:port or local; "
                                   "None: the COLAB_TPU_ADDR or TPU_NAME environment "
                                   "variable, or this TPU VM's chips")
    tpu_data_dir: str | None = knob(None, "gs:// folder where a TPU node reads the images as "
                                    "TFRecords, needed when they exceed 1 GiB decoded (a TPU "
                                    "VM reads local files and needs none); None: such a run "
                                    "stops and asks for it")
    top_k: tuple[int, ...] = knob((3, 5), "k values of the report's top-k accuracy")
    tensorboard: bool = knob(False, "also log to run_dir/tensorboard", type=bool,
                             cli_help="also log to RUN_DIR/tensorboard")
    keep_backups: bool = knob(False, "keep backup/ (per-epoch resume state) after the run "
                              "finishes", type=bool)
    overwrite: bool = knob(False, "delete a finished run or one with other settings and train "
                           "afresh", type=bool)
    verbose: int | None = knob(None, "0 silent, 1 progress bars, 2 one line per epoch; None: 1 "
                               "in a terminal or notebook, else 2", type=int)

    def __post_init__(self):
        top_k = tuple(self.top_k)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in top_k):
            _fail("top_k", self.top_k, "a sequence of integers >= 1")
        object.__setattr__(self, "top_k", top_k)
        if self.verbose is not None:
            _choice("verbose", self.verbose, (0, 1, 2))
        if not isinstance(self.download, bool):
            _fail("download", self.download, "True or False")


GROUPS = {"model": ModelSettings, "data": DataSettings, "recipe": RecipeSettings,
          "run": RunSettings}


def describe_augment(augment) -> Any:
    """A JSON description of ``augment`` that is the same for equal settings in any process.

    Example:
        >>> describe_augment("medium"), describe_augment(None)
        ('medium', None)
    """
    if augment is None or isinstance(augment, (str, bool)):
        return augment
    if hasattr(augment, "to_dict"):
        return {"spec": augment.to_dict()}
    if isinstance(augment, (list, tuple)):
        return [describe_augment(item) for item in augment]
    if hasattr(augment, "get_config"):  # a Keras layer: its class and config, not its address
        config = {k: v for k, v in augment.get_config().items() if k not in ("name", "dtype")}
        return {"layer": type(augment).__name__, "config": config}
    return {"object": f"{type(augment).__module__}.{type(augment).__qualname__}"}


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """``fit``'s keyword arguments, grouped and validated (``None``: chosen from the data)."""

    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    recipe: RecipeSettings = dataclasses.field(default_factory=RecipeSettings)
    run: RunSettings = dataclasses.field(default_factory=RunSettings)

    @staticmethod
    def names() -> dict[str, str]:
        """Every keyword argument and the group that owns it, in declaration order."""
        return {field.name: group for group, cls in GROUPS.items()
                for field in dataclasses.fields(cls)}

    @classmethod
    def from_kwargs(cls, **kwargs) -> "FitOptions":
        owners = cls.names()
        for key in kwargs:
            if key not in owners:
                close = [name for name in owners if key in name][:2] or \
                    difflib.get_close_matches(key, owners, n=2, cutoff=0.6)
                hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
                raise TypeError(f"fit() got an unknown argument {key!r}{hint}; accepted: "
                                + ", ".join(owners))
        grouped: dict[str, dict] = {group: {} for group in GROUPS}
        for key, value in kwargs.items():
            grouped[owners[key]][key] = value
        return cls(**{group: GROUPS[group](**values) for group, values in grouped.items()})

    def to_dict(self) -> dict:
        """``config.json``'s ``settings``: the groups that define a run (not ``run``)."""
        out = {}
        for group in ("model", "data", "recipe"):
            values = dataclasses.asdict(getattr(self, group))
            if group == "model" and values["image_size"] is not None:
                values["image_size"] = list(values["image_size"])
            if group == "model" and isinstance(values["variant"], dict):
                # A custom VariantSpec: every field, with JSON's lists, so that the settings
                # read back from config.json compare equal to these and the run resumes.
                values["variant"] = json.loads(json.dumps(values["variant"]))
            if group == "data":
                values["augment"] = describe_augment(getattr(self, group).augment)
                if isinstance(values["class_weight"], dict):
                    values["class_weight"] = {str(k): v for k, v in values["class_weight"].items()}
            out[group] = values
        return out


def keyword_parameters() -> list[inspect.Parameter]:
    """``fit``'s keyword-only parameters, for its signature (``help(fit)``, IDEs)."""
    return [
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                          default=field.default if field.default is not dataclasses.MISSING
                          else None)
        for cls in GROUPS.values() for field in dataclasses.fields(cls)
    ]


def arguments_doc(indent: str = "        ") -> str:
    """The "Args" lines of every keyword argument, from the fields' descriptions."""
    lines = []
    for group, cls in GROUPS.items():
        for field in dataclasses.fields(cls):
            lines.append(f"{indent}{field.name}: {field.metadata['help']} "
                         f"(default {field.default!r}; {group}).")
    return "\n".join(lines)
