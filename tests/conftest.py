"""Shared pytest setup: quiet TensorFlow, deterministic seeds, small-image helpers."""

import os

# Set before TensorFlow is imported anywhere in the test session.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seeds, so failures reproduce."""
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True)
def _temp_dir_under_pytest(tmp_path_factory, monkeypatch):
    """Anything written to the temp dir (tempfile.mkdtemp in tests, docstring examples, the
    library, subprocesses via TMPDIR) lands under pytest's own base temp, which pytest prunes:
    the suite leaves nothing behind in /tmp."""
    import tempfile

    scratch = str(tmp_path_factory.mktemp("tempdir"))
    monkeypatch.setattr(tempfile, "tempdir", scratch)
    monkeypatch.setenv("TMPDIR", scratch)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
