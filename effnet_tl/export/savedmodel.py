"""SavedModel export: a serving signature on encoded image bytes, decoded as evaluation decodes.

The graph holds the evaluation pipeline's own decoder (:mod:`effnet_tl.data.transforms`): a JPEG
is decoded at the largest libjpeg DCT scale that keeps its crop window at least the output size
(the shape comes from the JPEG header), a PNG (or GIF, BMP) with TensorFlow's ``decode_image``;
then the run's evaluation crop (the largest centred window of the output's aspect ratio, for the
crop policies) and the bilinear resize. Each image gets the pixels
:func:`effnet_tl.inference.read_pixels` gives that file, so the exported model and the Keras
model agree to float rounding (checked on real files at export).

Signatures:

* ``serving_default``: ``image_bytes`` (string ``[batch]``, the files' bytes) to
  ``probabilities`` ``[batch, classes]``, ``top_k_indices`` (int32), ``top_k_classes`` (string)
  and ``top_k_probabilities`` ``[batch, k]``.
* ``serving_pixels``: ``images`` (float32 ``[batch, H, W, 3]``, RGB in [0, 255], already
  decoded, cropped and resized) to the same outputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_for_serving", "run_savedmodel", "write_savedmodel"]

BYTES_SIGNATURE, PIXELS_SIGNATURE = "serving_default", "serving_pixels"
# The decoder's random-crop ranges: unused by every evaluation policy.
_UNUSED_RANGES = ((0.08, 1.0), (0.75, 4 / 3))


def decode_for_serving(image_size: tuple[int, int], resize: str):
    """One encoded image (a scalar string tensor) to float32 ``(H, W, 3)`` pixels in [0, 255].

    Example:
        >>> import tensorflow as tf
        >>> png = tf.io.encode_png(tf.fill([20, 30, 3], tf.constant(200, tf.uint8)))
        >>> decode = decode_for_serving((8, 8), "center_crop")
        >>> pixels = decode(png)
        >>> pixels.shape.as_list(), float(pixels[0, 0, 0])
        ([8, 8, 3], 200.0)
    """
    import tensorflow as tf

    from effnet_tl.data.transforms import _file_decoder
    from effnet_tl.inference.images import eval_policy

    height, width = image_size
    policy = eval_policy(resize)
    # As the pipeline reads a file alone: JPEGs with DCT scaling and their header's size, the
    # rest with decode_image and the decoded size ((-1, -1): not known before decoding).
    jpeg = _file_decoder(height, width, policy, *_UNUSED_RANGES, False, False, True, True)
    other = _file_decoder(height, width, policy, *_UNUSED_RANGES, False, False, False, False)

    def decode(data):
        return tf.cond(
            tf.io.is_jpeg(data),
            lambda: jpeg(data, 0, 0, tf.image.extract_jpeg_shape(data)[:2])[0],
            lambda: other(data, 0, 1, tf.constant([-1, -1]))[0],
        )

    return decode


def write_savedmodel(model, class_names, path, *, resize: str, top_k: int = 5) -> None:
    """Write ``model`` as a SavedModel with both signatures (see the module docstring)."""
    import keras
    import tensorflow as tf

    height, width = (int(side) for side in model.input_shape[1:3])
    k = max(1, min(int(top_k), len(class_names)))
    names = [str(name) for name in class_names]
    decode = decode_for_serving((height, width), resize)
    pixel_spec = tf.TensorSpec((height, width, 3), tf.float32)

    def outputs(probabilities):
        top = tf.math.top_k(probabilities, k=k)  # ties: the lower class index first, as argmax
        return {"probabilities": probabilities, "top_k_indices": top.indices,
                "top_k_classes": tf.gather(tf.constant(names), top.indices),
                "top_k_probabilities": top.values}

    def serve_bytes(image_bytes):
        pixels = tf.map_fn(decode, image_bytes, fn_output_signature=pixel_spec)
        return outputs(model(pixels, training=False))

    def serve_pixels(images):
        return outputs(model(images, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels, input_signature=[
        tf.TensorSpec([None, height, width, 3], tf.float32, name="images")])
    archive.write_out(str(path), verbose=False)


def run_savedmodel(path, encoded: list[bytes], *, batch_size: int = 32) -> np.ndarray:
    """The probabilities the ``serving_default`` signature gives for encoded images."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[BYTES_SIGNATURE]
    out = [serve(image_bytes=tf.constant(encoded[start:start + batch_size]))["probabilities"]
           .numpy() for start in range(0, len(encoded), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
