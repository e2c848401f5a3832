"""darkjax/notebooks/ablation.ipynb runs headless (nbclient + ipykernel) at its tiny size: both
DTCM settings train, the curves and the enhanced frames are drawn, the summary is sane."""

from __future__ import annotations

import json
import math
import os
from importlib import resources

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  root = tmp_path_factory.mktemp("notebook")
  path = resources.files("darkjax") / "notebooks" / "ablation.ipynb"
  notebook = nbformat.read(str(path), as_version=4)
  # The kernel inherits this environment: one plain CPU device, the tests' compilation cache.
  env = {"DARKJAX_NOTEBOOK_SIZE": "tiny", "DARKJAX_NOTEBOOK_WORKDIR": str(root / "work"),
         "DARKJAX_NOTEBOOK_DATA_DIR": str(root / "data"), "JAX_PLATFORMS": "cpu",
         "JAX_COMPILATION_CACHE_DIR": os.environ.get("DARKJAX_TEST_JAX_CACHE",
                                                     "/tmp/darkjax-test-jax-cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  saved = {k: os.environ.get(k) for k in [*env, "XLA_FLAGS", "MPLBACKEND"]}
  os.environ.update(env)
  os.environ.pop("XLA_FLAGS", None)
  os.environ.pop("MPLBACKEND", None)   # the notebook picks the inline backend
  try:
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": REPO}}).execute()
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
  return notebook


def _outputs(notebook, output_type):
  return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
          if o.output_type == output_type]


def test_notebook_trains_both_settings_and_reports_a_summary(executed):
  notebook = executed
  assert not _outputs(notebook, "error")
  text = "".join(o.text for o in _outputs(notebook, "stream") if o.name == "stdout")
  summary = json.loads(text.split("ABLATION_SUMMARY ", 1)[1].splitlines()[0])
  for setting in ("enhancer (L_total)", "no enhancement"):
    assert summary[setting]["steps"] == 4
    assert 0.0 <= summary[setting]["top1"] <= 1.0
    assert math.isfinite(summary[setting]["last_ar_loss"])   # L_AR, which both settings have
  # The enhancer brightens the dark clips (it starts around a brightening curve).
  assert summary["brightness"]["enhanced"] > summary["brightness"]["input"]


def test_notebook_draws_the_curves_and_the_enhanced_frames(executed):
  notebook = executed
  images = [o for o in _outputs(notebook, "display_data") if "image/png" in o.data]
  assert len(images) == 2
  assert all(len(o.data["image/png"]) > 1000 for o in images)


def test_parameters_cell_is_tagged_for_papermill():
  path = resources.files("darkjax") / "notebooks" / "ablation.ipynb"
  notebook = nbformat.read(str(path), as_version=4)
  tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1 and "SIZE" in tagged[0].source
