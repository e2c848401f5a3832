"""What a core install (no extras) must provide: .safetensors checkpoints without torch, and one
OpenCV wheel, the contrib build (TV-L1 optical flow)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dependencies() -> list[str]:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as file:
    return tomllib.load(file)["project"]["dependencies"]


def test_core_dependencies_name_safetensors_and_exactly_one_opencv_wheel():
  names = [d.split(">")[0].split("=")[0].split("<")[0].strip() for d in _dependencies()]
  assert "safetensors" in names
  assert [n for n in names if n.startswith("opencv")] == ["opencv-contrib-python-headless"]


def test_safetensors_checkpoint_loads_without_importing_torch(tmp_path):
  code = ("import sys\n"
          "import numpy as np\n"
          "from safetensors.numpy import save_file\n"
          "from darkjax.convert import io\n"
          "save_file({'w': np.arange(6, dtype=np.float32).reshape(2, 3)}, sys.argv[1])\n"
          "state = io.load_state_dict(sys.argv[1])\n"
          "assert state['w'].shape == (2, 3) and float(state['w'][1, 2]) == 5.0\n"
          "assert 'torch' not in sys.modules, 'torch imported'\n")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.safetensors")],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
