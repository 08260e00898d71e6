"""Quick start: fine-tune ImageNet-pretrained EfficientNet-Lite0 on scikit-learn's digits, offline.

Writes the 1,797 8x8 digits as PNG class folders (a stratified 80/20 train/test split), runs
``effnet_tl.fit`` (variant="lite0", weights="imagenet"; upsampled to 64 px RGB) and compares its
test accuracy with a strong simple baseline on the same split: logistic regression on the raw
pixels. Exits with status 1 if fine-tuning does not beat the baseline.

    python examples/quickstart.py [--work-dir DIR] [--image-size 64]
"""

from __future__ import annotations

import sys

from effnet_tl.cli import demo_main

# The whole job lives in effnet_tl.cli (also `effnet-tl demo`): write_digits() saves the
# digits as PNG class folders (train/ and test/, stratified 80/20), baseline_accuracy() fits
# logistic regression on the raw pixels, and demo_main() runs
#     effnet_tl.fit(data_dir, 10, variant="lite0", weights="imagenet", image_size=64, ...)
# and prints the comparison; exit status 1 if fine-tuning does not beat the baseline.

if __name__ == "__main__":
    sys.exit(demo_main())
