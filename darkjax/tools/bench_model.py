"""The `--model M` benchmarks of `python -m darkjax.tools.bench` (darkjax/tools/bench.py describes
the CLI and its options): the train step (`bench_step`) timed against PyTorch eager and
torch.compile and under `--variants` (`bench_train_step`), per remat policy (`bench_memory`), its
variants alone (`bench_variants`), compiled for a compile-only target (`bench_target`) or its
operations counted (`bench_flops`)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

from darkjax import profiling, targets
from darkjax.layers import conv, conv2d
from darkjax.profiling import format_flops, format_summary, format_utilisation
from darkjax.tools import bench_report, bench_torch
from darkjax.tools.bench_step import (abstract_state, build_model, check_applied, conv_overrides,
                                      donated, flax_step, parse_variant, step_fn,
                                      variant_specs)
from darkjax.tools.measure import (alternating_rounds, autotuned, compare_policies,
                                   device_profile, format_autotuned, format_lowerings,
                                   format_traffic, hlo_traffic, median, memory_bytes,
                                   pipelined_rounds, remat_policies, report)


def _row(args: argparse.Namespace, device: Any = None) -> dict[str, Any]:
  """What names a `--model` row in its JSON: model, batch, clip, dtype and optimizer (what
  `bench_report.read_cold_from` and `--markdown-from`'s matching of counts compare); with the
  `device` it runs on, how it is timed and where."""
  row = {"model": args.model, "batch": args.batch, "frames": args.frames, "size": args.size,
         "dtype": args.dtype, "optimizer": {"name": args.optimizer,
                                            **bench_torch.OPTIMIZERS[args.optimizer]}}
  if device is not None:
    row.update(steps=args.steps, rounds=args.rounds, device=device.platform,
               device_kind=device.device_kind, cores=conv2d.cores(), devices=args.devices)
  return row



def bench_target(args: argparse.Namespace) -> dict[str, Any]:
  """`--model M --target T`: the benchmarked train step compiled for a compile-only target
  (darkjax.aot: "h100:1", "tpu-v5e:2x2", ...) on abstract arguments, once per `--variants` spec,
  nothing run: each one's compile time, XLA's memory analysis per device, the memory traffic of
  its kernels (`measure.hlo_traffic`: fusions, convolutions, and the operands of its loops), and
  the lowerings its trace chose. The batch is split over the target's devices."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from darkjax import aot  # pylint: disable=import-outside-toplevel

  devices = aot.compile_only_devices(args.target)
  platform = targets.platform_of(devices)
  if args.batch % len(devices):
    raise SystemExit(f"bench: --batch {args.batch} is not divisible by the {len(devices)} "
                     f"devices of --target {args.target}")
  mesh = jax.sharding.Mesh(devices, ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  abstract = lambda tree: jax.tree.map(   # noqa: E731
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), tree)
  shape = (args.batch, args.frames, args.size, args.size, 3)
  specs = variant_specs(args.variants or "auto")
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} train step compiled for {args.target} ({platform}), nothing run",
        flush=True)
  result: dict[str, Any] = {**_row(args), "target": args.target,
                            "device": args.target, "platform": platform,
                            "device_kind": f"compiled for {args.target} ({devices[0].device_kind})"
                                           " on a CPU host, nothing run",
                            "cores": os.cpu_count(), "variants": {}}
  for spec in specs:
    settings = parse_variant(spec)
    with targets.compiling_for(platform), conv_overrides(settings), \
        conv.record_lowerings() as chosen:
      model = build_model(args.model, args.dtype, args.lowering, settings)
      with conv2d.recording_paused():   # the step's lowerings only, not the init's
        variables, tx, opt_state = abstract_state(model, shape, args.optimizer)
      start = time.perf_counter()
      lowered = jax.jit(step_fn(model, tx), donate_argnums=donated(settings)).lower(
          abstract(variables["params"]), abstract(variables.get("batch_stats", {})),
          abstract(opt_state), jax.ShapeDtypeStruct(shape, jnp.float32, sharding=split),
          jax.ShapeDtypeStruct((args.batch,), jnp.int32, sharding=split),
          jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated))
    check_applied(settings, chosen)
    options = {**targets.compiler_options(platform, args.target),
               **settings.get("compiler_options", {})}
    compiled = lowered.compile(compiler_options=options)
    compile_s = time.perf_counter() - start
    text = compiled.as_text()
    traffic, tuned = hlo_traffic(text), autotuned(text)
    memory = memory_bytes(compiled)
    if memory:   # what the step holds per device, as darkjax.fit counts it
      memory["total"] = (memory["argument"] + memory["output"] + memory["temp"]
                         - memory["alias"])
    entry = {"compile_s": compile_s, "memory": memory, "traffic": traffic,
             "lowerings": dict(sorted(chosen.items())), "autotuned": tuned}
    result["variants"][spec] = entry
    held = f"{memory['total'] / 2 ** 30:.2f} GiB per device" if memory else "no memory analysis"
    print(f"  {spec}: compiled in {compile_s:.1f} s, {held}; traffic: {format_traffic(traffic)}"
          f"\n    lowerings: {format_lowerings(entry['lowerings'])}"
          + (f"\n    autotuned on a GPU: {format_autotuned(tuned)}"
             if platform == "gpu" else ""), flush=True)
  return result


def bench_flops(args: argparse.Namespace) -> dict[str, Any]:
  """`--count-flops PLATFORM`: XLA's count of the benchmarked train step's floating-point
  operations (`profiling.step_flops`: a multiply-add as two, scans unrolled) with the
  step traced for PLATFORM (its convolution lowerings: `targets.compiling_for`), on abstract
  arguments: nothing is compiled or run, so any size counts on any host. With a GPU row's step
  time it gives that row's TFLOP/s and share of the device's peak."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  shape = (args.batch, args.frames, args.size, args.size, 3)
  with targets.compiling_for(args.count_flops):
    model = build_model(args.model, args.dtype, args.lowering)
    clips = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables, tx, opt_state = abstract_state(model, shape, args.optimizer)
    flops = profiling.step_flops(
        jax.jit(step_fn(model, tx)), variables["params"], variables.get("batch_stats", {}),
        opt_state, clips, jax.ShapeDtypeStruct((args.batch,), jnp.int32), jax.random.key(2))
  if flops is None:
    raise SystemExit("bench --count-flops: XLA gave no operation count for this program")
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} train step traced for {args.count_flops}: {format_flops(flops)} per "
        f"step, {format_flops(flops / args.batch)} per clip", flush=True)
  return {**_row(args), "traced_for": args.count_flops, "flops_per_step": flops,
          "flops_per_clip": flops / args.batch}


def _torch_runs(args: argparse.Namespace, platform: str,
                compile_modes: tuple[str, ...] = ()) -> dict[str, Callable[[], None]]:
  return bench_torch.torch_runs(args.model, args.batch, args.frames, args.size, platform=platform,
                                dtype=args.dtype, optimizer=args.optimizer,
                                compile_modes=compile_modes, layout=args.torch_layout)


def bench_train_step(args: argparse.Namespace) -> dict[str, Any]:
  if args.count_flops:
    return bench_flops(args)
  if args.target:
    return bench_target(args)
  if args.variants is not None and not args.torch_compile:
    return bench_variants(args)
  if args.memory:
    return bench_memory(args)
  if args.torch_compile:   # before minutes of compiling the flax step
    bench_torch.check_compile_modes(args.torch_compile_modes)
  for path in args.cold_from or ():   # likewise: a pre-pass of another row
    bench_report.read_cold_from(path, _row(args))
  # With --torch-compile, --variants' first spec is the flax side and each other one a side of
  # its own ("flax SPEC"), timed in the same alternating rounds.
  specs = variant_specs(args.variants) if args.variants is not None else ["auto"]
  def build(spec: str):
    return flax_step(args.model, args.batch, args.frames, args.size, args.lowering,
                     args.devices, parse_variant(spec), dtype=args.dtype,
                     optimizer=args.optimizer)

  compile_s, flax_run = build(specs[0])
  # A variant that does not compile (an experimental XLA option) is reported, not fatal: the
  # row's other sides are what a short GPU lease came for.
  extra, failed = {}, {}
  for spec in specs[1:]:
    try:
      extra[spec] = build(spec)
    except Exception as error:  # pylint: disable=broad-except
      failed[spec] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
      print(f"  flax {spec}: did not compile ({failed[spec]})", flush=True)
  import jax  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  result: dict[str, Any] = {
      **_row(args, device), "compile_s": compile_s[0], "compile_cpu_s": compile_s[1],
      "lowerings": flax_run.lowerings,
      "flops_per_step": flax_run.flops}
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} on {device.platform} ({device.device_kind}), {conv2d.cores()} cores; "
        f"compile {compile_s[0]:.1f} s wall, {compile_s[1]:.1f} s CPU", flush=True)
  print(f"  lowerings: {format_lowerings(flax_run.lowerings)}", flush=True)
  if args.variants is not None:
    result["flax_variant"] = specs[0]
    result["variants"] = {spec: {"compile_s": c[0], "lowerings": run.lowerings}
                          for spec, (c, run) in extra.items()}
    result["variants"].update({spec: {"error": message} for spec, message in failed.items()})
    for spec, (c, run) in extra.items():
      print(f"  flax {spec}: compile {c[0]:.1f} s wall; lowerings: "
            f"{format_lowerings(run.lowerings)}", flush=True)
  if args.compile_only and not args.vs_torch:
    return bench_report.with_cold_compile(result, args)
  runs = {"flax": flax_run}
  if args.vs_torch:
    runs.update(_torch_runs(args, device.platform,
                            args.torch_compile_modes if args.torch_compile else ()))
    result["torch_device"] = bench_torch.device_name(bench_torch.torch_device(device.platform))
    for name, run in list(runs.items())[1:]:
      what = "compile (first call)" if hasattr(run, "compile_s") else "first call"
      print(f"  {name}: {what} {run.first_call_s:.1f} s", flush=True)
  # Each side's compile (flax's AOT compile; a compiled torch step's first call) and first call.
  compiles = {"flax": {"compile_s": compile_s[0]},
              **{name: {"first_call_s": run.first_call_s,
                        **({"compile_s": run.compile_s} if hasattr(run, "compile_s") else {})}
                 for name, run in list(runs.items())[1:]}}
  if args.compile_only:   # every side compiled, no rounds
    result["sides"] = compiles
    return bench_report.with_cold_compile(result, args)
  variant_runs = {f"flax {spec}": run for spec, (_, run) in extra.items()}
  rounds = alternating_rounds({**runs, **variant_runs}, args.rounds, args.steps)
  width = max(len(name) for name in [*runs, *variant_runs])
  for spec in extra:
    timed = rounds.pop(f"flax {spec}")
    entry = result["variants"][spec]
    entry.update(bench_report.side_summary(timed))
    entry["round_ratios"] = [v[0] / f[0] for v, f in zip(timed, rounds["flax"])]
    entry["ratio"] = median(entry["round_ratios"])
    report(f"flax {spec}".ljust(width), timed)
    print(f"  flax {spec} / flax: per round " +
          ", ".join(f"{r:.3f}" for r in entry["round_ratios"]) +
          f" (median {entry['ratio']:.3f})", flush=True)
  sides = {name: {**bench_report.side_summary(timed), **compiles[name]}
           for name, timed in rounds.items()}
  pipelined = (pipelined_rounds({**runs, **variant_runs}, args.rounds, args.steps)
               if args.pipelined else {})
  for name, timed in pipelined.items():
    entry = sides[name] if name in sides else result["variants"][name[len("flax "):]]
    entry.update(bench_report.pipelined_summary(timed))
  if args.profile:
    result["profiles"] = {}
    for name, run in {"flax": flax_run, **variant_runs}.items():
      result["profiles"][name] = device_profile(run, args.profile, run.compiled.as_text())
      print(f"  {name} profile: " + format_summary(result["profiles"][name]), flush=True)
  result["sides"] = sides
  result["flax_step_s"], result["flax_step_cpu_s"] = report("flax".ljust(width), rounds["flax"])
  bench_report.with_utilisation(result)
  if "utilisation" in sides["flax"]:
    print(f"  XLA counts {format_flops(result['flops_per_step'])} per step: flax "
          f"{format_utilisation(sides['flax']['utilisation'])}", flush=True)
  bench_report.with_cold_compile(result, args)
  if not args.vs_torch:
    return result
  result["torch_step_s"], result["torch_step_cpu_s"] = report("torch".ljust(width), rounds["torch"])
  for name in list(runs)[2:]:
    report(name.ljust(width), rounds[name])
  result["ratio"] = result["flax_step_s"] / result["torch_step_s"]
  result["cpu_ratio"] = result["flax_step_cpu_s"] / result["torch_step_cpu_s"]
  # rounds alternate, so each flax round and the torch rounds after it saw about the same load
  per_round = {name: [f[0] / t[0] for f, t in zip(rounds["flax"], rounds[name])]
               for name in list(runs)[1:]}
  result["round_ratios"] = per_round["torch"]
  result["ratios"] = {name: median(ratios) for name, ratios in per_round.items()}
  print(f"  flax/torch ratio: wall {result['ratio']:.2f}, CPU time {result['cpu_ratio']:.2f}; "
        f"per round " + ", ".join(f"{r:.2f}" for r in result["round_ratios"]) +
        f" (median {result['ratios']['torch']:.2f})", flush=True)
  compiled = list(runs)[2:]
  if compiled:
    reference = min(compiled, key=lambda name: sides[name]["step_ms"])
    result["reference"] = reference
    result["ratios"]["reference"] = result["ratios"][reference]
    for name in compiled:
      print(f"  flax/{name}: per round " + ", ".join(f"{r:.2f}" for r in per_round[name]) +
            f" (median {result['ratios'][name]:.2f})" +
            (" <- reference (faster compiled mode)" if name == reference else ""), flush=True)
  if pipelined:
    bench_report.pipelined_ratios(result, pipelined, list(runs)[1:])
    print(f"  pipelined ({args.steps} steps, one wait): " +
          ", ".join(f"{name} {sides[name]['pipelined_ms']:.1f} ms" for name in runs) +
          "".join(f", flax {spec} {result['variants'][spec]['pipelined_ms']:.1f} ms"
                  for spec in extra) +
          "; flax/" + ", flax/".join(f"{name} {ratio:.2f}" for name, ratio in
                                     result["pipelined_ratios"].items()
                                     if name != "reference"), flush=True)
  if compiled:
    print(f"  compile: flax {compile_s[0]:.1f} s (lower + XLA compile), " +
          ", ".join(f"{name} {sides[name]['compile_s']:.1f} s (first call)" for name in compiled),
          flush=True)
  return result


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
  """The train step compiled without rematerialisation and under each policy of `--remat`
  (darkjax.layers.remat): XLA's memory analysis, compile time, and (unless --compile-only) step
  times in alternating rounds, each policy's per-round ratio to no remat."""
  import jax  # pylint: disable=import-outside-toplevel
  policies = remat_policies(args.remat)
  device = jax.devices()[0]
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype} on "
        f"{device.platform} ({device.device_kind}), memory per remat policy", flush=True)

  def build(policy: str):
    compile_s, run = flax_step(args.model, args.batch, args.frames, args.size, args.lowering,
                               args.devices, remat=policy, dtype=args.dtype,
                               optimizer=args.optimizer)
    return {"compile_s": compile_s[0], **run.memory}, run

  return {"model": args.model, "device": device.platform, "frames": args.frames,
          "remat": compare_policies(policies, build, args)}


def bench_variants(args: argparse.Namespace) -> dict[str, Any]:
  """The train step under each of `--variants` (and torch with `--vs-torch`), timed in alternating
  rounds; every entry's per-round wall times are divided by the first variant's of that round.
  With `--pipelined` each variant's steps also dispatched back to back (`pipelined_ms`, and
  `pipelined_ratio` to the first's), with `--profile N` each one's device profile (`profile`):
  the levers of a row, flax alone (`bench_report.lever_table`)."""
  import jax  # pylint: disable=import-outside-toplevel
  specs = variant_specs(args.variants)
  device = jax.devices()[0]
  print(f"{args.model}: B={args.batch} {args.frames}x{args.size}x{args.size} {args.dtype}, "
        f"{args.optimizer} on {device.platform} ({device.device_kind}), {conv2d.cores()} cores, "
        f"{len(specs)} variants", flush=True)
  runs: dict[str, Callable[[], None]] = {}
  result: dict[str, Any] = {**_row(args, device), "variants": {}}
  for spec in specs:
    compile_s, runs[spec] = flax_step(args.model, args.batch, args.frames, args.size,
                                      args.lowering, args.devices, parse_variant(spec),
                                      dtype=args.dtype, optimizer=args.optimizer)
    result["variants"][spec] = {"compile_s": compile_s[0], "lowerings": runs[spec].lowerings,
                                **runs[spec].memory}
    print(f"  {spec}: step compiled in {compile_s[0]:.1f} s wall, {compile_s[1]:.1f} s CPU; "
          f"lowerings: {format_lowerings(runs[spec].lowerings)}", flush=True)
  if args.compile_only:
    return bench_report.with_cold_compile(result, args)
  if args.vs_torch:
    runs["torch"] = _torch_runs(args, device.platform)["torch"]
    result["variants"]["torch"] = {}
  rounds = alternating_rounds(runs, args.rounds, args.steps)
  first, width = specs[0], max(len(name) for name in runs)
  for name, timed in rounds.items():
    entry = result["variants"][name]
    entry["step_s"], entry["step_cpu_s"] = report(name.ljust(width), timed)
    entry["round_ratios"] = [t[0] / f[0] for t, f in zip(timed, rounds[first])]
    entry["ratio"] = median(entry["round_ratios"])
  for name in list(runs)[1:]:
    ratios = result["variants"][name]["round_ratios"]
    print(f"  {name.ljust(width)} / {first}: wall per round " +
          ", ".join(f"{r:.3f}" for r in ratios) + f" (median {median(ratios):.3f})", flush=True)
  if getattr(args, "pipelined", False):   # dispatched back to back, as training runs them
    pipelined = pipelined_rounds(runs, args.rounds, args.steps)
    for name, timed in pipelined.items():
      entry = result["variants"][name]
      entry.update(bench_report.pipelined_summary(timed))
      entry["pipelined_ratio"] = median([t[0] / f[0] for t, f in zip(timed, pipelined[first])])
      print(f"  {name.ljust(width)} pipelined: {entry['pipelined_ms']:.1f} ms/step "
            f"({entry['pipelined_ratio']:.3f} x {first}'s)", flush=True)
  if args.profile:
    for spec in specs:
      entry = result["variants"][spec]
      entry["profile"] = device_profile(runs[spec], args.profile, runs[spec].compiled.as_text())
      print(f"  {spec} profile: " + format_summary(entry["profile"]), flush=True)
  return bench_report.with_cold_compile(result, args)

