"""Using a trained model: predictions on files, folders, arrays and PIL images (with flip
test-time augmentation), and the fit report on new data (:func:`evaluate`)."""

from effnet_tl.inference.evaluate import evaluate, labelled_examples
from effnet_tl.inference.images import expand_inputs, read_pixels
from effnet_tl.inference.predict import flip_averaged, predict_images, trained_with_flips

__all__ = ["evaluate", "expand_inputs", "flip_averaged", "labelled_examples", "predict_images",
           "read_pixels", "trained_with_flips"]
