"""Parameter and multiply-add counts of built Keras models, in the EfficientNet papers' convention.

Tan & Le (2019, Table 2; 2021, Table 7) report "FLOPs" that are in fact multiply-accumulate
counts (MACs) of the convolution and fully connected layers for one image: EfficientNet-B0 at
224 px is "0.39B FLOPs". :func:`profile` counts exactly that:

* ``Conv1D/2D/3D``: ``out_positions * prod(kernel_size) * (c_in / groups) * filters``
* ``DepthwiseConv1D/2D``: ``out_positions * prod(kernel_size) * c_in * depth_multiplier``
* ``SeparableConv1D/2D``: the depthwise part above plus ``out_positions * c_in * dm * filters``
* ``Conv*Transpose``: ``in_positions * prod(kernel_size) * c_in * filters``
* ``Dense``: ``positions * in_features * units`` (positions > 1 when applied to a 4-D tensor)
* ``EinsumDense``: output elements times the contracted kernel dimensions

Bias additions, batch normalisation, activations, pooling, residual adds, the squeeze-excite
multiply and any raw ``keras.ops`` maths inside a custom ``call`` are not counted, as in the
papers. Leaf layers that hold weights but are none of the above (nor a normalisation/embedding
layer) are listed in :attr:`ModelProfile.uncounted_layers` so that a gap is never silent.

Counting works by tracing the model once, symbolically, on a one-image input inside a
``tf.function`` (graph construction only, no forward pass) while every instance of the layer
types above, found recursively with :func:`effnet_tl.compat.sublayers`, records the shapes it is
called with. Layers nested inside custom ``keras.layers.Layer`` blocks (our MBConv,
FusedMBConv, SqueezeExcite) are therefore counted as well as those of a plain functional
graph, and a layer called twice is counted twice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import keras
import tensorflow as tf

from effnet_tl.compat import sublayers

__all__ = [
    "LayerProfile",
    "ModelProfile",
    "VariantRow",
    "format_variant_table",
    "profile",
    "variant_table",
]

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_DENSE = (keras.layers.Dense,)
_EINSUM = (keras.layers.EinsumDense,)
_COUNTED = _CONV + _DEPTHWISE + _SEPARABLE + _TRANSPOSE + _DENSE + _EINSUM

# Weight-holding layers whose work the papers' convention leaves out on purpose.
_NOT_COUNTED_BY_CONVENTION = tuple(
    cls
    for cls in (
        getattr(keras.layers, name, None)
        for name in (
            "BatchNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "RMSNormalization",
            "Normalization",
            "Embedding",
            "PReLU",
        )
    )
    if cls is not None
)


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """One traced call of a counted layer.

    Attributes:
        name: The layer's path, e.g. ``"block2a/expand_conv"`` for a sublayer of a custom block.
        class_name: ``"Conv2D"``, ``"DepthwiseConv2D"``, ``"Dense"``...
        input_shape: Shape of the call's input, batch dimension 1.
        output_shape: Shape of the call's output, batch dimension 1.
        params: Size of the layer's weights (repeated on every call of a shared layer).
        multiply_adds: Multiply-accumulates of this call for one image.
    """

    name: str
    class_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    multiply_adds: int


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Size and cost of a model for one input image.

    Attributes:
        total_params: Equals ``model.count_params()``.
        trainable_params: Size of ``model.trainable_weights``.
        non_trainable_params: Size of ``model.non_trainable_weights`` (BN statistics...).
        multiply_adds: Multiply-accumulates of conv/dense layers for one image: the papers' "FLOPs".
        input_shape: The per-image input shape that was traced, without the batch dimension.
        per_layer: One entry per call of a counted layer, in call order.
        uncounted_layers: Paths of weight-holding leaf layers that no rule counts (normally empty).
    """

    total_params: int
    trainable_params: int
    non_trainable_params: int
    multiply_adds: int
    input_shape: tuple[int, ...]
    per_layer: tuple[LayerProfile, ...] = ()
    uncounted_layers: tuple[str, ...] = ()

    @property
    def gmacs(self) -> float:
        """Multiply-adds in billions (the papers' "B FLOPs")."""
        return self.multiply_adds / 1e9

    def summary(self, per_layer: bool = False) -> str:
        """A readable report; ``per_layer=True`` adds one line per counted layer call."""
        lines = [
            f"input shape        {self.input_shape}",
            f"params             {self.total_params:,} "
            f"(trainable {self.trainable_params:,}, non-trainable {self.non_trainable_params:,})",
            f"multiply-adds      {self.multiply_adds:,} ({self.gmacs:.3f} GMACs, "
            "conv/dense only, as the EfficientNet papers' FLOPs)",
        ]
        if self.uncounted_layers:
            lines.append(f"not counted        {', '.join(self.uncounted_layers)}")
        if per_layer:
            width = max((len(p.name) for p in self.per_layer), default=4)
            for p in self.per_layer:
                lines.append(
                    f"  {p.name:<{width}}  {p.class_name:<16} {str(p.output_shape):<22}"
                    f" {p.multiply_adds:>15,}"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _positions(shape: Sequence[int], channels_first: bool) -> int:
    """Spatial positions of one image: every axis but batch and channels."""
    spatial = shape[2:] if channels_first else shape[1:-1]
    return math.prod(spatial)


def _channels(shape: Sequence[int], channels_first: bool) -> int:
    return shape[1] if channels_first else shape[-1]


def _multiply_adds(layer: keras.layers.Layer, in_shape, out_shape) -> int:
    """Multiply-accumulates of one call of ``layer``; shapes include a batch dimension of 1."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    k = math.prod(getattr(layer, "kernel_size", ()))
    c_in = _channels(in_shape, channels_first)
    if isinstance(layer, _SEPARABLE):
        pos = _positions(out_shape, channels_first)
        mid = c_in * layer.depth_multiplier
        return pos * k * mid + pos * mid * layer.filters
    if isinstance(layer, _DEPTHWISE):
        return _positions(out_shape, channels_first) * k * c_in * layer.depth_multiplier
    if isinstance(layer, _TRANSPOSE):
        return _positions(in_shape, channels_first) * k * c_in * layer.filters
    if isinstance(layer, _CONV):
        return _positions(out_shape, channels_first) * k * (c_in // layer.groups) * layer.filters
    if isinstance(layer, _DENSE):
        return math.prod(in_shape[1:-1]) * in_shape[-1] * layer.units
    if isinstance(layer, _EINSUM):
        # "abc,cd->abd": every output element sums over the kernel axes absent from the output.
        operands, out_letters = layer.equation.split("->")
        kernel_letters = operands.split(",")[1]
        contracted = math.prod(
            dim
            for letter, dim in zip(kernel_letters, layer.kernel.shape)
            if letter not in out_letters
        )
        return math.prod(out_shape[1:]) * contracted
    raise TypeError(f"no multiply-add rule for {type(layer).__name__} ({layer.name!r})")


def _num_weights(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def _resolve_input(model: keras.Model, input_shape: Sequence[int] | None):
    """Per-image input shape and dtype to trace with."""
    inputs = None
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        pass
    dtype = keras.backend.floatx()
    model_shape = None
    if inputs:
        if len(inputs) != 1:
            raise ValueError(
                f"profile() supports single-input models; {model.name!r} has "
                f"{len(inputs)} inputs: {[tuple(i.shape) for i in inputs]}"
            )
        model_shape = tuple(inputs[0].shape[1:])
        dtype = inputs[0].dtype
    if input_shape is None:
        if model_shape is None or any(d is None for d in model_shape):
            raise ValueError(
                f"input_shape=None but model {model.name!r} has input shape "
                f"{model_shape}; pass a full per-image shape, e.g. input_shape=(224, 224, 3)"
            )
        return model_shape, dtype
    input_shape = tuple(input_shape)
    if not input_shape or any(not isinstance(d, int) or d <= 0 for d in input_shape):
        raise ValueError(
            f"input_shape={input_shape} must be positive ints without the batch axis, "
            "e.g. (224, 224, 3)"
        )
    if model_shape is not None:
        if len(model_shape) != len(input_shape) or any(
            m is not None and m != d for m, d in zip(model_shape, input_shape)
        ):
            raise ValueError(
                f"input_shape={input_shape} does not fit model {model.name!r}, whose input "
                f"shape is {model_shape}; build the model at that resolution instead"
            )
    return input_shape, dtype


def profile(model: keras.Model, input_shape: Sequence[int] | None = None) -> ModelProfile:
    """Counts parameters and multiply-adds of a built Keras model for one image.

    Multiply-adds follow the EfficientNet papers' "FLOPs": multiply-accumulates of conv and
    dense layers only (bias, BN, activations, pooling, adds and ``keras.ops`` maths in custom
    ``call`` methods are ignored); see the module docstring for the per-layer rules. The model
    is traced once symbolically (no forward pass), so B7 at 600 px takes a few seconds.
    While it traces, the counted layers' ``call`` is wrapped per instance, so do not call the
    same model from another thread at the same time.

    Args:
        model: A built model: functional, sequential or subclassed, whose blocks may be custom
            layers holding Conv2D/DepthwiseConv2D/Dense sublayers.
        input_shape: Per-image input shape without the batch axis, e.g. ``(224, 224, 3)``.
            Defaults to the model's input shape; required when that has ``None`` dimensions.

    Returns:
        A frozen :class:`ModelProfile`.

    Raises:
        ValueError: If the model is not built, has several inputs, or the input shape is unknown
            or conflicts with the model's.

    Example:
        >>> import keras
        >>> from effnet_tl.models.profile import profile
        >>> inputs = keras.Input((32, 32, 3))
        >>> x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(4)(x))
        >>> p = profile(model)
        >>> p.multiply_adds == 32 * 32 * 3 * 3 * 3 * 8 + 32 * 32 * 8 * 4
        True
        >>> p.total_params == model.count_params()
        True
    """
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built; call it on data or model.build(...) first"
        )
    shape, dtype = _resolve_input(model, input_shape)

    counted = []
    uncounted = []
    seen = set()
    for layer in sublayers(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, _COUNTED):
            counted.append(layer)
        elif (
            layer.weights
            and not sublayers(layer, recursive=False)
            and not isinstance(layer, _NOT_COUNTED_BY_CONVENTION)
        ):
            uncounted.append(layer.path or layer.name)

    calls: list[tuple[keras.layers.Layer, tuple, tuple]] = []

    def _recording(layer, call):
        def call_and_record(inputs, *args, **kwargs):
            outputs = call(inputs, *args, **kwargs)
            calls.append((layer, tuple(inputs.shape), tuple(outputs.shape)))
            return outputs

        return call_and_record

    # Instance attributes shadow the class's `call`, which Layer.__call__ looks up on self;
    # writing to __dict__ keeps Keras' attribute tracking out of it, and deleting restores.
    shadowed = {id(layer): layer.__dict__.get("call") for layer in counted}
    for layer in counted:
        layer.__dict__["call"] = _recording(layer, layer.call)
    try:
        traced = tf.function(lambda x: model(x, training=False), autograph=False)
        traced.get_concrete_function(tf.TensorSpec((1, *shape), dtype))
    finally:
        for layer in counted:
            if shadowed[id(layer)] is None:
                layer.__dict__.pop("call", None)
            else:
                layer.__dict__["call"] = shadowed[id(layer)]

    per_layer = []
    for layer, in_shape, out_shape in calls:
        if any(d is None for d in in_shape + out_shape):
            raise ValueError(
                f"layer {layer.path!r} traced with unknown dims {in_shape} -> {out_shape}; "
                "profile() needs static shapes"
            )
        per_layer.append(
            LayerProfile(
                name=layer.path or layer.name,
                class_name=type(layer).__name__,
                input_shape=in_shape,
                output_shape=out_shape,
                params=_num_weights(layer.weights),
                multiply_adds=int(_multiply_adds(layer, in_shape, out_shape)),
            )
        )
    trainable = _num_weights(model.trainable_weights)
    non_trainable = _num_weights(model.non_trainable_weights)
    return ModelProfile(
        total_params=trainable + non_trainable,
        trainable_params=trainable,
        non_trainable_params=non_trainable,
        multiply_adds=sum(p.multiply_adds for p in per_layer),
        input_shape=tuple(shape),
        per_layer=tuple(per_layer),
        uncounted_layers=tuple(uncounted),
    )


@dataclasses.dataclass(frozen=True)
class VariantRow:
    """One row of :func:`variant_table`."""

    name: str
    resolution: tuple[int, ...]
    total_params: int
    gmacs: float


Builder = Callable[[], keras.Model]


def variant_table(
    builders: Mapping[str, Builder] | Iterable[tuple[str, Builder]],
) -> list[VariantRow]:
    """Builds and profiles each model in turn, dropping it before building the next.

    Args:
        builders: ``{name: zero-argument callable returning a built model}`` (or pairs), e.g.
            ``{"B0": lambda: keras.applications.EfficientNetB0(weights=None)}``.

    Returns:
        One :class:`VariantRow` per builder, in order; ``resolution`` is the spatial input shape.

    Example:
        >>> import keras
        >>> from effnet_tl.models.profile import variant_table
        >>> def tiny(size):
        ...     inputs = keras.Input((size, size, 3))
        ...     return keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        >>> [(r.name, r.resolution, r.total_params) for r in variant_table({"s": lambda: tiny(8)})]
        [('s', (8, 8), 8)]
    """
    items = builders.items() if isinstance(builders, Mapping) else builders
    rows = []
    for name, build in items:
        model = build()
        p = profile(model)
        rows.append(VariantRow(name, tuple(p.input_shape[:-1]), p.total_params, p.gmacs))
        del model
    return rows


def format_variant_table(rows: Iterable[VariantRow]) -> str:
    """Renders :func:`variant_table` rows as an aligned text table."""
    lines = [f"{'model':<20} {'resolution':>12} {'params':>14} {'GMACs':>9}"]
    for r in rows:
        res = "x".join(str(d) for d in r.resolution)
        lines.append(f"{r.name:<20} {res:>12} {r.total_params:>14,} {r.gmacs:>9.3f}")
    return "\n".join(lines)
