"""Every notebook in notebooks/ runs top to bottom with the small CPU settings.

Each one executes in a fresh Jupyter kernel on this interpreter (so it imports the
tlcore under test), with TLCORE_NB_SMALL=1 and its outputs in a temp folder.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="python3-nbformat is not installed")
nbclient = pytest.importorskip("nbclient", reason="python3-nbclient is not installed")
pytest.importorskip("ipykernel", reason="python3-ipykernel is not installed")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Environment whose "python3" kernel is this interpreter, not whatever Jupyter finds first."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tlcore tests)",
        "language": "python",
    }))
    return {"JUPYTER_PATH": str(root), "TLCORE_NB_SMALL": "1"}


def test_notebooks_are_found_and_stored_without_outputs():
    names = {p.name for p in NOTEBOOKS}
    assert {"cifar10_transfer.ipynb", "flowers.ipynb", "scratch_vs_transfer.ipynb", "digits.ipynb",
            "serving.ipynb"} <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        # The parameter cell is the first code cell, tagged for papermill-style injection.
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: no parameters cell first"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for key, value in {**kernel_env, "TLCORE_NB_OUT": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    # Every notebook leaves its figures behind: the plots really ran.
    assert list(tmp_path.rglob("*.png")), f"{path.name} wrote no figures"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
