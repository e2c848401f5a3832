"""README's table of what exports is rendered from tests/test_export.py's cases, not written by
hand: each row is a model that test exports to StableHLO (reloaded by jax) and to ONNX (run by
onnxruntime) and compares with the JAX logits to 1e-4. `.ci/run` runs every case with the `onnx`
extra installed and DARKJAX_REQUIRE_ONNX=1, so a row whose export fails fails CI."""

from __future__ import annotations

import pathlib
import re

from test_export import ONNX_ZOO, PAPERS, ZOO

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- export table: rendered from tests/test_export.py's cases by tests/test_export_table.py -->"
END = "<!-- end of export table -->"
# ONNX case -> (the row's name, the StableHLO case of its family: the family's tiny variant).
ZOO_ROWS = {
    "small3d": ("small3d (README's main job)", "small3d_tiny"),
    "c3d_tiny": ("C3D", "c3d_tiny"),
    "resnet3d_18": ("ResNet3D-18", "resnet3d_tiny"),
    "resnet3d_50": ("ResNet3D-50", "resnet3d_tiny"),
    "resnext3d_101": ("ResNeXt3D-101", "resnext3d_tiny"),
    "r3d_18": ("R3D-18", "r2plus1d_tiny_test"),
    "mc3_18": ("MC3-18", "r2plus1d_tiny_test"),
    "r2plus1d_18": ("R(2+1)D-18", "r2plus1d_tiny_test"),
    "r2plus1d_34_ig65m": ("R(2+1)D-34", "r2plus1d_tiny_test"),
    "vit_tiny_test": ("ViT", "vit_tiny_test"),
}
PAPER_ROWS = {
    "dinet": "3D-DiNet (action classifier)",
    "dtcm": "DTCM (enhancer + classifier)",
    "liftnet": "LIFT-Net (student, FFT as DFT in ONNX)",
    "twostream": "two-stream C3D (both towers + fusion, flow as an input)",
    "actlumos": "ActLumos (student)",
}


def render() -> str:
  rows = ["| model | StableHLO case | ONNX case |", "|---|---|---|"]
  for case, (name, stablehlo_case) in ZOO_ROWS.items():
    narrowed = " (narrowed)" if ONNX_ZOO[case] else ""
    rows.append(f"| {name} | `{stablehlo_case}` | `{case}`{narrowed} |")
  for case, name in PAPER_ROWS.items():
    rows.append(f"| {name} | `{case}` runlocal | `{case}` runlocal |")
  return "\n".join([BEGIN, *rows, END])


def test_every_export_case_has_a_row():
  assert set(ZOO_ROWS) == set(ONNX_ZOO)
  assert {stablehlo for _, stablehlo in ZOO_ROWS.values()} == set(ZOO)
  assert set(PAPER_ROWS) == set(PAPERS)


def test_readme_shows_the_rendered_table():
  text = README.read_text(encoding="utf-8")
  found = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, re.S)
  assert found, f"README.md has no export table; add this one:\n{render()}"
  assert found.group(0) == render(), f"README's export table is stale; replace it with:\n{render()}"
