"""The house's layering (docs/architecture.md), read from the source: every `import` of a darkjax
module, top-level or inside a function, is an arrow. Nothing in the library imports darkjax.tools,
no two modules reach each other through arrows (no cycle), and the layers only import downwards."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "darkjax")

# Bottom to top; a module may import its own layer (acyclically) and those below it.
LAYERS = (
    ("ground", ("darkjax.messages", "darkjax.paths", "darkjax.file_state", "darkjax.variables",
                "darkjax.metrics", "darkjax.preemption", "darkjax.profiling", "darkjax.sharding",
                "darkjax.aot", "darkjax.init_rng",
                "darkjax.targets",
                "darkjax.config",
                "darkjax.capabilities", "darkjax.layers", "darkjax.data", "darkjax.losses",
                "darkjax.optim", "darkjax.checkpoint", "darkjax.plots", "darkjax.convert",
                "darkjax.models", "darkjax.model_init", "darkjax.fit", "darkjax.config_history",
                "darkjax.reports",
                "darkjax.__init__")),
    ("evaluation and step", ("darkjax.evaluators", "darkjax.step")),
    ("contract", ("darkjax.task",)),
    ("trainer", ("darkjax.train", "darkjax.phases")),
    ("papers and notebook runs", ("darkjax.trainers", "darkjax.notebook")),
    ("tools and entry points", ("darkjax.tools", "darkjax.main")),
)


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") and rel != "darkjax.__init__" else rel


def _imports(path: str, module: str) -> set[str]:
  """darkjax modules `path` imports anywhere in its body (a package import names the package)."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("darkjax"))
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      if not base.startswith("darkjax"):
        continue
      for alias in node.names:   # `from darkjax import train` imports the module darkjax.train
        candidate = f"{base}.{alias.name}"
        found.add(candidate if _exists(candidate) else base)
  return found


def _exists(module: str) -> bool:
  path = os.path.join(os.path.dirname(ROOT), *module.split("."))
  return os.path.isfile(path + ".py") or os.path.isdir(path)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  out = {}
  for directory, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        module = _module_name(path)
        out[module] = {m for m in _imports(path, module) if m != module}
  return out


def _layer(module: str) -> int:
  for index, (_, prefixes) in enumerate(LAYERS):
    if any(module == p or module.startswith(p + ".") for p in prefixes):
      return index
  raise AssertionError(f"{module} is in no layer of tests/test_layering.py (and "
                       "docs/architecture.md): place it")


def test_every_module_has_a_layer_and_imports_only_downwards(graph):
  wrong = []
  for module, targets in sorted(graph.items()):
    for target in sorted(targets):
      if target == "darkjax":
        continue
      if _layer(target) > _layer(module):
        wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {target} "
                     f"({LAYERS[_layer(target)][0]})")
  assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_the_library_never_imports_its_tools(graph):
  offenders = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                     if t.startswith("darkjax.tools") and not m.startswith("darkjax.tools")
                     and m != "darkjax.main")
  assert not offenders, offenders


def test_no_import_cycles(graph):
  # Modules inside one package count by their own file; a package's __init__ that re-exports its
  # modules is an arrow from the package to them.
  state: dict[str, int] = {}
  cycles = []

  def visit(node, stack):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt not in graph:
        continue
      if state.get(nxt) == 1:
        cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = 2

  for module in sorted(graph):
    if module not in state:
      visit(module, [])
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_arrows(graph):
  # The walk reads top-level and function-level imports (so the tests above can fail).
  assert "darkjax.task" in graph["darkjax.train"]
  assert "darkjax.train" in graph["darkjax.main"]   # imported inside main()
  assert _layer("darkjax.tools.predict") > _layer("darkjax.train")


def test_predicting_with_an_exported_model_imports_no_jax():
  """`python -m darkjax.tools.predict --model model.onnx` runs where jax is not installed
  (tests/test_predict_exported.py runs it with the onnx extra): its modules, the host pipeline's
  clip ops included, import no jax, flax or tensorflow, even inside the package imports."""
  script = (
      "import sys\n"
      "for name in ('jax', 'jaxlib', 'flax', 'tensorflow'):\n"
      "  sys.modules[name] = None   # importing one raises ImportError\n"
      "import darkjax.tools.predict\n")
  run = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(ROOT),
                       capture_output=True, text=True, timeout=120, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
