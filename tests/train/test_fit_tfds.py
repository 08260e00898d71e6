"""fit("tfds:NAME", ...) end to end on a tfds dataset prepared here from files (no network)."""

import json

from effnet_tl.train import fit
from tests.data.tfds_builders import CLASSES, SHAPES, EffnetTlTestShapes, write_shapes_archive


def test_fit_prepares_a_tfds_dataset_trains_and_reports(tmp_path):
    archive, _ = write_shapes_archive(tmp_path / "source" / "shapes")
    EffnetTlTestShapes.ARCHIVE = str(archive)
    data_dir = tmp_path / "tfds"
    result = fit(f"tfds:{SHAPES}", 3, data_dir=data_dir, variant="lite0", weights=None,
                 image_size=32, batch_size=8, head_epochs=1, finetune_epochs=1,
                 unfreeze_blocks=1, val_fraction=0.25, verbose=0, run_dir=tmp_path / "run")
    assert result.class_names == CLASSES
    report = json.loads(result.paths.report.read_text())
    assert report["val"]["per_class"].keys() == set(CLASSES)
    assert report["test"]["per_class"]["circle"]["support"] == 2  # the dataset's test split
    data_report = json.loads((result.paths.root / "data_report.json").read_text())
    assert data_report["kind"] == "tfds"
    assert data_report["class_counts"]["train"] == {"circle": 9, "square": 6, "triangle": 3}
    config = json.loads(result.paths.config.read_text())
    assert config["source"]["dataset"] == f"tfds:{SHAPES}"
    assert (config["source"]["num_train"], config["source"]["num_val"]) == (18, 6)
    assert "data_dir" not in config["settings"]["data"]  # where data lives is not the run
