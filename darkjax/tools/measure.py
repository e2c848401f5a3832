"""What every benchmark measures the same way: step times (median of steps, best of rounds), XLA's
memory analysis of a compiled step, the lowerings a trace chose, and remat policies compared
against none. Used by `darkjax.tools.bench` and its `--config` part (`bench_config`)."""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable


def median(values: list[float]) -> float:
  values = sorted(values)
  return values[len(values) // 2]


def format_lowerings(lowerings: dict[str, int]) -> str:
  """'conv3d:sum2d x12, max_pool3d:separable x1, ...': what each backend-aware op chose."""
  return ", ".join(f"{key} x{count}" for key, count in lowerings.items()) or "none"


def memory_bytes(compiled) -> dict[str, int]:
  """XLA's memory analysis of a compiled step: temp, argument, output and generated-code bytes."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return {}
  return {"temp": int(analysis.temp_size_in_bytes),
          "argument": int(analysis.argument_size_in_bytes),
          "output": int(analysis.output_size_in_bytes),
          "alias": int(analysis.alias_size_in_bytes),
          "code": int(analysis.generated_code_size_in_bytes)}


def time_steps(run_step: Callable[[], None], steps: int) -> tuple[float, float]:
  """Median wall time and median process CPU time (all threads) of `steps` steps."""
  walls, cpus = [], []
  for _ in range(steps):
    wall, cpu = time.perf_counter(), time.process_time()
    run_step()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return median(walls), median(cpus)


def report(name: str, rounds: list[tuple[float, float]]) -> tuple[float, float]:
  best_wall = min(wall for wall, _ in rounds)
  best_cpu = min(cpu for _, cpu in rounds)
  print(f"  {name:5s} {best_wall * 1e3:8.1f} ms/step wall, {best_cpu * 1e3:8.1f} ms/step CPU "
        f"(rounds: " + ", ".join(f"{w * 1e3:.0f}" for w, _ in rounds) + " ms)", flush=True)
  return best_wall, best_cpu


def alternating_rounds(runs: dict[str, Callable[[], None]], rounds: int,
                       steps: int) -> dict[str, list[tuple[float, float]]]:
  """Per run: (median wall, median CPU) of `steps` steps in each of `rounds` rounds, the runs
  alternating within a round so that machine noise hits them alike; one untimed call first."""
  for run in runs.values():
    run()   # first call: allocation, thread pools
  timed: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      timed[name].append(time_steps(run, steps))
  return timed


def remat_policies(spec: str) -> list[str]:
  """"none" then each policy of a comma-separated `--remat`; an unknown name fails before
  anything compiles."""
  from darkjax.layers import remat as remat_lib  # pylint: disable=import-outside-toplevel
  policies = ["none"] + [p for p in (spec or "").split(",") if p and p != "none"]
  for policy in policies:
    remat_lib.policy_name(policy)
  return policies


def compare_policies(policies: list[str], build: Callable[[str], tuple[dict, Callable[[], None]]],
                     args: argparse.Namespace) -> dict[str, dict[str, Any]]:
  """Per policy: `build(policy)` -> (entry with "compile_s" and XLA's memory bytes, step runner);
  prints memory and compile time, each policy's temp memory against none, and unless
  --compile-only the step times of alternating rounds, each policy's per-round ratio to none."""
  entries, runs = {}, {}
  for policy in policies:
    entries[policy], runs[policy] = build(policy)
    entry = entries[policy]
    print(f"  remat={policy:13}: compile {entry['compile_s']:.1f} s; temp "
          f"{entry.get('temp', 0) / 2**20:.1f} MiB, arguments "
          f"{entry.get('argument', 0) / 2**20:.1f} MiB, output "
          f"{entry.get('output', 0) / 2**20:.1f} MiB", flush=True)
  base = entries["none"]
  for policy in policies[1:]:
    entry = entries[policy]
    if base.get("temp") and entry.get("temp"):
      entry["temp_reduction"] = base["temp"] / entry["temp"]
      print(f"  temp memory none / {policy}: {entry['temp_reduction']:.2f}x", flush=True)
  if args.compile_only:
    return entries
  rounds = alternating_rounds(runs, args.rounds, args.steps)
  for policy in policies:
    entries[policy]["step_s"], _ = report(f"remat={policy}", rounds[policy])
  for policy in policies[1:]:
    ratios = [t[0] / f[0] for t, f in zip(rounds[policy], rounds["none"])]
    entries[policy]["time_ratio"] = median(ratios)
    print(f"  step time {policy} / none per round: " + ", ".join(f"{r:.2f}" for r in ratios) +
          f" (median {median(ratios):.2f})", flush=True)
  return entries
