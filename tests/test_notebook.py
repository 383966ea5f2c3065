"""notebooks/quickstart.ipynb: stored clean, and runs top to bottom (tiny settings) in a Jupyter kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from conftest import SMALL_DEBUG

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
STEPS = 60
# one finished 50-step episode (env.max_episode_frames=200); updates every 4th env step from step 20 (10 of each
# model: a CPU update takes about a second); imagination visuals once, at the end
OVERRIDES = [*SMALL_DEBUG, "train.world_model_every=4", "train.actor_critic_every=4"]


def outputs(nb, cell_id: str) -> list:
    (cell,) = [cell for cell in nb.cells if cell.get("id") == cell_id]
    return cell.outputs


def text(cell_outputs: list) -> str:
    return "".join(out.get("text", "") for out in cell_outputs if out.output_type == "stream")


def mime_types(cell_outputs: list) -> set[str]:
    return {key for out in cell_outputs if out.output_type in ("display_data", "execute_result") for key in out.data}


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert nb.metadata.kernelspec.name == "python3"
    sources = "\n".join(cell.source for cell in code)
    for env_var in ("DRAMA_NOTEBOOK_STEPS", "DRAMA_NOTEBOOK_OUTPUT", "DRAMA_NOTEBOOK_OVERRIDES"):
        assert env_var in sources


@pytest.mark.slow
def test_quickstart_notebook_runs_tiny(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # first, which interpreter the kernel runs (must be this venv's: the python3 kernelspec's "python" resolves to
    # sys.executable)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)", id="interpreter"))
    # the kernel is a subprocess: it inherits this environment
    monkeypatch.setenv("DRAMA_NOTEBOOK_STEPS", str(STEPS))
    monkeypatch.setenv("DRAMA_NOTEBOOK_OUTPUT", str(tmp_path / "runs"))
    monkeypatch.setenv("DRAMA_NOTEBOOK_OVERRIDES", " ".join(OVERRIDES))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # one torch thread: the tiny model gains nothing from two, and spinning OpenMP threads slow a shared machine
    # (other pytest workers) down badly (3-4x measured on 2 busy cores)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # cwd = notebooks/
    client.execute()  # raises CellExecutionError on the first failing cell

    assert text(outputs(nb, "interpreter")).strip() == sys.executable
    assert f"repository {ROOT}" in text(outputs(nb, "setup"))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("quickstart-")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "mlflow.db").is_file()
    assert f'"env_steps": {STEPS}' in text(outputs(nb, "train"))
    assert "FINISHED" in text(outputs(nb, "curves"))
    for cell_id in ("curves", "reconstruction", "imagination"):
        assert "image/png" in mime_types(outputs(nb, cell_id)), cell_id
    assert "image/gif" in mime_types(outputs(nb, "gif"))
    assert (run_dir / "notebook" / "imagination_vs_real.gif").is_file()
    assert f"mlflow ui --backend-store-uri sqlite:///{run_dir.resolve()}/mlflow.db" in text(outputs(nb, "mlflow-ui"))
