"""The notebooks in notebooks/ run top to bottom in a real Jupyter kernel."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("EFFNET_TL_NOTEBOOK_IMAGES_PER_CLASS", "20")
    # The notebook writes its images and run folder here, not in a fresh folder of the temp dir.
    monkeypatch.setenv("EFFNET_TL_NOTEBOOK_WORK_DIR", str(tmp_path / "work"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # The plots really render inline (PNG payloads), not just paths.
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    assert (tmp_path / "work" / "run" / "model.keras").exists()
