"""Conv3D lowerings: same values and gradients as the native 3D convolution; auto choices; flags."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax import targets
from darkjax import task as task_lib
from darkjax.layers import conv, conv2d, cpu_conv3d

# (name, input (B, T, H, W, C), kernel (kt, kh, kw), out channels, strides, padding, groups)
CASES = [
    ("3x3x3", (2, 5, 7, 6, 4), (3, 3, 3), 6, (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 1),
    ("strided", (1, 6, 9, 8, 3), (3, 3, 3), 5, (2, 2, 2), ((1, 1), (1, 1), (1, 1)), 1),
    ("stem", (1, 7, 11, 10, 3), (3, 7, 7), 4, (1, 2, 2), ((1, 1), (3, 3), (3, 3)), 1),
    ("asym_pad", (1, 4, 6, 6, 2), (2, 3, 2), 3, (1, 2, 1), ((1, 0), (0, 2), (1, 0)), 1),
    ("spatial_1x3x3", (2, 3, 8, 8, 4), (1, 3, 3), 6, (1, 2, 2), ((0, 0), (1, 1), (1, 1)), 1),
    ("temporal_3x1x1", (2, 6, 5, 4, 4), (3, 1, 1), 5, (2, 1, 1), ((1, 1), (0, 0), (0, 0)), 1),
    ("temporal_spatial_stride", (1, 5, 6, 6, 3), (3, 1, 1), 2, (1, 2, 2),
     ((1, 1), (0, 0), (0, 0)), 1),
    ("temporal_spatial_pad", (1, 5, 4, 4, 3), (2, 1, 1), 2, (1, 1, 1), ((0, 1), (1, 0), (0, 1)), 1),
    ("pointwise", (2, 4, 5, 5, 6), (1, 1, 1), 3, (1, 1, 1), ((0, 0), (0, 0), (0, 0)), 1),
    ("pointwise_s2", (2, 5, 5, 6, 6), (1, 1, 1), 3, (2, 2, 2), ((0, 0), (0, 0), (0, 0)), 1),
    ("grouped", (2, 4, 6, 6, 8), (3, 3, 3), 8, (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 4),
    ("grouped_s2", (1, 5, 7, 7, 6), (3, 3, 3), 9, (2, 2, 2), ((1, 1), (1, 1), (1, 1)), 3),
    ("depthwise", (1, 4, 5, 5, 4), (3, 3, 3), 4, (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 4),
    # 8 groups of 4 channels: bundled 4 at a time into 2 block-diagonal groups on CPU
    ("grouped_bundled", (1, 3, 5, 6, 32), (3, 3, 3), 16, (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 8),
    # space-to-depth: odd kernel (extra padding), even kernel with an odd remainder (cropped)
    ("s2d_odd", (1, 4, 9, 7, 2), (1, 3, 5), 3, (2, 2, 2), ((0, 0), (1, 0), (2, 2)), 1),
    ("s2d_crop", (1, 3, 9, 10, 3), (2, 4, 3), 4, (1, 2, 2), ((1, 0), (1, 1), (1, 1)), 1),
    # > 16 channels: forward and input-gradient 2D convs take the one-column-wider form.
    ("wide_channels", (1, 3, 5, 6, 20), (3, 3, 3), 24, (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 1),
    ("wide_valid", (1, 3, 5, 7, 18), (1, 3, 3), 20, (1, 1, 1), ((0, 0), (0, 0), (0, 0)), 1),
    ("wide_temporal", (1, 4, 3, 3, 20), (3, 1, 1), 17, (1, 1, 1), ((1, 1), (0, 0), (0, 0)), 1),
    # temporal stride 1: taps shifted in time; only the middle tap sees the single frame.
    ("one_frame", (2, 1, 5, 5, 3), (3, 3, 3), 4, (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 1),
    ("wide_time_pad", (1, 2, 4, 4, 3), (3, 3, 3), 4, (1, 1, 1), ((2, 3), (1, 1), (1, 1)), 1),
    ("valid_time", (1, 5, 4, 4, 3), (3, 3, 3), 4, (1, 1, 1), ((0, 0), (1, 1), (1, 1)), 1),
]


def _applicable(lowering: str, kernel: tuple[int, int, int], groups: int,
                strides: tuple[int, int, int]) -> bool:
  if lowering == "temporal2d":
    return kernel[1:] == (1, 1)
  if lowering == "pointwise":
    return kernel == (1, 1, 1) and groups == 1
  if lowering == "s2d":
    return strides[1:] == (2, 2) and groups == 1
  return True


def _inputs(shape, kernel, out_features, groups, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32)
  k = rng.standard_normal(kernel + (shape[-1] // groups, out_features)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(k)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_lowerings_match_native_values_and_gradients(case):
  _, shape, kernel, out_features, strides, padding, groups = case
  x, k = _inputs(shape, kernel, out_features, groups)
  y_ref, vjp_ref = jax.vjp(lambda x, k: conv.conv3d(x, k, strides, padding, groups, "native"), x, k)
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(y_ref.shape).astype(np.float32))
  grads_ref = vjp_ref(cotangent)

  @functools.partial(jax.jit, static_argnums=(2, 3))
  def value_and_grads(x, k, lowering, kernel_grad):
    y, vjp = jax.vjp(lambda x, k: conv.conv3d(x, k, strides, padding, groups, lowering,
                                              kernel_grad), x, k)
    return y, vjp(cotangent)

  checked = []
  for lowering in conv.LOWERINGS[1:]:
    for kernel_grad in conv.KERNEL_GRADS[1:]:
      if not _applicable(lowering, kernel, groups, strides) or (lowering, kernel_grad) in (
          ("export", "dots"), ("frames2d", "dots")):
        continue
      y, grads = value_and_grads(x, k, lowering, kernel_grad)
      what = f"{lowering}/{kernel_grad}"
      np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(y_ref))),
                                 err_msg=what)
      for name, g, g_ref in zip(("dx", "dkernel"), grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(g_ref))),
                                   err_msg=f"{what} {name}")
      checked.append(what)
  assert {"sum2d/dots", "taps2d/dots", "sum2d/xla", "export/xla", "frames2d/xla"} <= set(checked)


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
@pytest.mark.parametrize("cores", [1, 2, 64])
def test_export_lowering_is_the_same_on_every_host(monkeypatch, platform, cores):
  """Inside export_lowering() the auto choices read neither the platform nor the core count."""
  monkeypatch.setattr(conv2d, "cores", lambda: cores)
  x, k = _inputs((1, 4, 6, 6, 8), (3, 3, 3), 8, 4)
  from darkjax.layers import depthwise  # pylint: disable=import-outside-toplevel
  with targets.compiling_for(platform), conv.export_lowering(), conv.record_lowerings() as chosen:
    jax.eval_shape(lambda: conv.conv3d(x, k, (1, 2, 2), ((1, 1),) * 3, 4))
    jax.eval_shape(lambda: conv.conv3d(x, k[:, :, :, :, :4], (2, 2, 2), ((1, 1),) * 3, 4))
    jax.eval_shape(lambda: conv.max_pool3d(x, (3, 3, 3), (2, 2, 2), ((1, 1),) * 3))
    jax.eval_shape(lambda: depthwise.depthwise_conv2d(x[:, 0], k[0, :, :, :1, :]))
  assert dict(chosen) == {"conv3d:export": 2, "conv3d_kernel_grad:xla": 2, "max_pool3d:export": 1,
                          "depthwise:native": 1}
  assert set(chosen) <= conv.PORTABLE_LOWERINGS
  with pytest.raises(ValueError, match="'export' lowering is differentiated by autodiff"):
    conv.conv3d(x, k, lowering="export", kernel_grad="dots", feature_group_count=4)


def _jaxpr_conv_shapes(jaxpr):
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      shapes.append(eqn.outvars[0].aval.shape)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes += _jaxpr_conv_shapes(sub)
  return shapes


def _compiled_conv_shapes(fn, *args):
  """Output shapes of the convolutions XLA keeps in the optimized program (the jaxpr also holds
  forward convs that only the backward pass's recomputation traced, which XLA drops)."""
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  return [tuple(int(d) for d in m.split(",")) for m in
          re.findall(r"= f32\[([\d,]+)\]\{[^}]*\} convolution\(", hlo)]


@pytest.mark.parametrize("in_features, out_features, groups, widened", [
    (20, 24, 1, True), (70, 64, 1, True), (20, 96, 1, True), (20, 128, 1, False),
    (20, 144, 1, False), (20, 192, 1, True), (8, 12, 1, False),
    (64, 128, 8, True), (32, 32, 32, False)])  # grouped: widened; depthwise: not
def test_convs_that_leave_cores_idle_are_widened_on_cpu(monkeypatch, in_features, out_features,
                                                        groups, widened):
  """On 2 cores, a 2D conv whose output channels split unevenly into YNNPACK's 64-channel tiles
  or that is grouped (and has > 16 channels) computes one extra output column, so XLA runs its
  multithreaded conv; the values are the same."""
  monkeypatch.setattr(conv2d, "cores", lambda: 2)
  x, k = _inputs((2, 5, 6, in_features), (3, 3), out_features, groups)
  fn = lambda x, k: conv2d.multithreaded_conv2d(x, k, (1, 1), ((1, 1), (1, 1)), groups)
  assert _jaxpr_conv_shapes(jax.make_jaxpr(fn)(x, k).jaxpr) == [(2, 5, 7 if widened else 6,
                                                                 out_features)]
  np.testing.assert_allclose(jax.jit(fn)(x, k), conv2d.plain_conv2d(
      x, k, (1, 1), ((1, 1), (1, 1)), groups), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("groups", [1, 2])
def test_sum2d_stride1_runs_taps_side_by_side(monkeypatch, groups):
  """Temporal stride 1: one 2D conv over all frames with the taps' kernels side by side (grouped:
  one per tap), forward and input gradient (no copies of shifted frames); kernel gradients per
  tap."""
  monkeypatch.setattr(conv2d, "cores", lambda: 2)
  x, k = _inputs((1, 4, 5, 6, 20), (3, 3, 3), 24, groups)
  pad = ((1, 1), (1, 1), (1, 1))

  def loss(x, k):
    return jnp.sum(conv.conv3d(x, k, (1, 1, 1), pad, groups, "sum2d", "xla") ** 2)

  shapes = _compiled_conv_shapes(jax.grad(loss, argnums=(0, 1)), x, k)
  frames = [s for s in shapes if s[0] == 4]  # batch = frames; kernel-gradient convs: channels
  if groups == 1:
    # d-input (3 taps x 20 channels), forward (3 x 24); then one kernel gradient per tap
    assert sorted(frames) == [(4, 5, 7, 60), (4, 5, 7, 72)], shapes
    assert [s for s in shapes if s[0] != 4] == [(20, 3, 3, 24)] * 3, shapes
  else:
    # forward and input gradient: one widened conv per tap (grouped); kernel gradients: one
    # grouped conv per tap, the group's 10 input channels as its batch, in a loop over frames
    assert [s for s in frames if s[-1] == 20] == [(4, 5, 7, 20)] * 3, shapes
    assert [s for s in frames if s[-1] != 20] == [(4, 5, 7, 24)] * 3, shapes
    assert [s for s in shapes if s[0] != 4] == [(10, 3, 3, 24)] * 3, shapes


def test_kernel_grad_dots_matches_autodiff():
  x, k = _inputs((2, 5, 6, 6, 6), (3, 3, 3), 6, 3)
  strides, padding = (1, 2, 1), ((1, 1), (0, 1), (1, 1))
  y, vjp = jax.vjp(lambda k: conv.conv3d(x, k, strides, padding, 3, "native"), k)
  g = jnp.asarray(np.random.default_rng(2).standard_normal(y.shape).astype(np.float32))
  np.testing.assert_allclose(cpu_conv3d.kernel_grad_dots(x, g, k.shape, strides, padding, 3),
                             vjp(g)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", [c for c in CASES if c[-1] == 1 and c[2][1:] != (1, 1)],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("positions, max_pieces, frames_per_piece", [(1, 32, 1), (1, 2, None)])
def test_kernel_grad_in_frame_pieces_matches_native(monkeypatch, case, positions, max_pieces,
                                                     frames_per_piece):
  """The 2D convs' kernel gradient summed over pieces of frames (one frame each, or at most two
  uneven pieces) equals the native kernel gradient, and really is split."""
  _, shape, kernel, out_features, strides, padding, groups = case
  monkeypatch.setattr(conv2d, "KERNEL_GRAD_PIECE_POSITIONS", positions)
  monkeypatch.setattr(conv2d, "KERNEL_GRAD_PIECES", max_pieces)
  x, k = _inputs(shape, kernel, out_features, groups)
  y, vjp_ref = jax.vjp(lambda k: conv.conv3d(x, k, strides, padding, groups, "native"), k)
  g = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
  for lowering in ("sum2d", "taps2d"):
    dk_fn = lambda k, lowering=lowering: jax.vjp(lambda k: conv.conv3d(
        x, k, strides, padding, groups, lowering, "xla"), k)[1](g)[0]
    dk = jax.jit(dk_fn)(k)
    np.testing.assert_allclose(dk, vjp_ref(g)[0], rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(vjp_ref(g)[0]))), err_msg=lowering)
    frames = shape[0] * y.shape[1]  # batch of 2D convs: B * T_out
    taps = kernel[0] if lowering == "sum2d" else 1
    (lo, hi), t_in = padding[0], shape[1]
    if lowering == "sum2d" and strides[0] == 1 and lo + hi >= kernel[0] - 1:
      # taps shifted in time: the taps' convs see all B * T input frames side by side in one
      # conv (groups == 1 here); taps that would only see padding are left out
      frames = shape[0] * t_in
      taps = sum(any(0 <= t + a - lo < t_in for t in range(y.shape[1])) for a in range(kernel[0]))
    per_tap = frames if frames_per_piece == 1 else min(frames, max_pieces)
    # only the kernel gradient is asked for: XLA keeps its convs, not the forward / input grad
    convs = len(_compiled_conv_shapes(lambda x, g: jax.vjp(lambda k: conv.conv3d(
        x, k, strides, padding, groups, lowering, "xla"), k)[1](g)[0], x, g))
    assert convs == taps * per_tap, (lowering, convs)


def _gpu_choice(kernel, groups):
  """GPU: XLA's 3D convolutions for grouped, (1, k, k), (k, 1, 1) and (1, 1, 1) kernels (laid out
  channels-last by targets.compiler_options), full ungrouped kernels as channels-last 2D ones."""
  kt, kh, kw = kernel
  return "native" if groups > 1 or kt == 1 or (kh, kw) == (1, 1) else "frames2d"


@pytest.mark.parametrize("kernel, in_group, groups, lowering, kernel_grad", [
    ((3, 3, 3), 64, 1, "sum2d", "xla"),
    ((1, 3, 3), 64, 1, "sum2d", "xla"),
    ((3, 1, 1), 144, 1, "temporal2d", "dots"),
    ((1, 1, 1), 64, 1, "pointwise", "xla"),
    ((3, 3, 3), 16, 8, "taps2d", "xla"),  # ResNeXt layer 1, 4 groups bundled into one
    ((3, 3, 3), 16, 32, "taps2d", "dots"),  # ResNeXt layer 3
    ((1, 1, 1), 8, 2, "taps2d", "dots"),
    ((3, 7, 7), 3, 1, "taps2d", "xla"),  # RGB convs at spatial stride 1
    ((1, 7, 7), 3, 1, "sum2d", "xla"),
])
def test_auto_choices_per_shape(kernel, in_group, groups, lowering, kernel_grad):
  shape = kernel + (in_group, 64)
  pads = tuple((k // 2, k // 2) for k in kernel)
  assert conv.choose_lowering(shape, pads, groups, backend="cpu") == lowering
  assert conv.choose_kernel_grad(shape, groups, lowering) == kernel_grad
  assert conv.choose_lowering(shape, pads, groups, backend="tpu") == "native"
  assert conv.choose_lowering(shape, pads, groups, backend="gpu") == _gpu_choice(kernel, groups)
  assert conv.choose_kernel_grad(shape, groups, "native") == "xla"


@pytest.mark.parametrize("kernel, in_group, groups, strides, lowering", [
    ((7, 7, 7), 3, 1, (1, 2, 2), "s2d"),  # Hara ResNet / ResNeXt stem
    ((3, 7, 7), 3, 1, (1, 2, 2), "s2d"),  # torchvision R3D / MC3 stem
    ((1, 7, 7), 3, 1, (1, 2, 2), "s2d"),  # R(2+1)D spatial stem
    ((3, 3, 3), 2, 1, (2, 2, 2), "s2d"),  # optical-flow input
    ((3, 3, 3), 64, 1, (2, 2, 2), "sum2d"),  # many channels: no space-to-depth
    ((1, 1, 1), 3, 1, (1, 2, 2), "pointwise"),
    ((3, 3, 3), 8, 32, (2, 2, 2), "sum2d"),  # grouped, temporally strided
])
def test_auto_choices_for_strided_convs(kernel, in_group, groups, strides, lowering):
  shape = kernel + (in_group, 64)
  pads = tuple((k // 2, k // 2) for k in kernel)
  assert conv.choose_lowering(shape, pads, groups, backend="cpu", strides=strides) == lowering
  assert conv.choose_lowering(shape, pads, groups, backend="gpu", strides=strides) == (
      _gpu_choice(kernel, groups))
  assert conv.choose_lowering(shape, pads, groups, backend="tpu", strides=strides) == "native"


@pytest.mark.parametrize("in_group, groups, bundle", [
    (4, 32, 4), (8, 32, 2), (16, 32, 1), (32, 32, 1), (1, 64, 16), (3, 6, 3), (4, 1, 1)])
def test_group_bundles_keep_at_most_16_input_channels(in_group, groups, bundle):
  assert conv.group_bundle(in_group, groups) == bundle


def test_bundled_kernel_is_block_diagonal_and_keeps_the_groups_weights():
  groups, bundle, in_group, out_group = 6, 3, 2, 4
  k = jnp.arange(3 * in_group * groups * out_group, dtype=jnp.float32).reshape(
      (3, in_group, groups * out_group)) + 1
  b = cpu_conv3d.bundle_groups(k, groups, bundle)
  assert b.shape == (3, bundle * in_group, groups * out_group)
  for g in range(groups):
    rows = slice((g % bundle) * in_group, (g % bundle + 1) * in_group)
    cols = slice(g * out_group, (g + 1) * out_group)
    np.testing.assert_array_equal(b[:, rows, cols], k[:, :, cols])
    assert float(jnp.abs(b[:, :, cols]).sum() - jnp.abs(k[:, :, cols]).sum()) == 0  # zeros else


@pytest.mark.parametrize("kernel, in_group, out, strides, positions, kernel_grad", [
    ((3, 3, 3), 64, 64, (1, 1, 1), 56 * 56, "xla"),  # R3D layer 1
    ((3, 3, 3), 128, 128, (1, 1, 1), 28 * 28, "xla"),  # R3D layer 2
    ((3, 3, 3), 64, 128, (1, 1, 1), 56 * 56, "dots"),  # C3D conv2
    ((3, 3, 3), 64, 128, (1, 1, 1), None, "xla"),  # frame size unknown
    ((3, 3, 3), 128, 256, (1, 1, 1), 28 * 28, "dots"),  # >= 256 outputs
    ((3, 3, 3), 64, 128, (2, 2, 2), 56 * 56, "dots"),  # strided
    ((1, 3, 3), 128, 288, (1, 1, 1), 28 * 28, "dots"),  # R(2+1)D spatial, layer 2
    ((7, 4, 4), 12, 64, (1, 2, 2), 112 * 112, "xla"),  # space-to-depth stem (s2d)
])
def test_auto_kernel_gradient_per_shape_and_frame_size(kernel, in_group, out, strides, positions,
                                                        kernel_grad):
  lowering = "s2d" if kernel == (7, 4, 4) else "sum2d"
  shape = kernel + (in_group, out)
  assert conv.choose_kernel_grad(shape, 1, lowering, strides, positions) == kernel_grad


def test_bad_lowering_names_the_choices():
  x, k = _inputs((1, 3, 4, 4, 2), (3, 3, 3), 2, 1)
  with pytest.raises(ValueError, match="unknown conv lowering 'fast'.*sum2d"):
    conv.conv3d(x, k, lowering="fast")
  with pytest.raises(ValueError, match="unknown kernel_grad 'magic'.*dots"):
    conv.conv3d(x, k, kernel_grad="magic")
  with pytest.raises(ValueError, match="temporal2d.*\\(k, 1, 1\\)"):
    conv.conv3d(x, k, padding=((1, 1),) * 3, lowering="temporal2d")
  with pytest.raises(ValueError, match="temporal size 3 .* kernel 5"):
    conv.conv3d(x, jnp.zeros((5, 1, 1, 2, 2)), lowering="sum2d")


def test_module_params_do_not_depend_on_lowering():
  x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 4, 6, 6, 4)).astype(np.float32))
  outs = {}
  for lowering in ("native", "sum2d", "taps2d"):
    module = conv.Conv3D(8, (3, 3, 3), padding=((1, 1),) * 3, feature_group_count=2, use_bias=True,
                         lowering=lowering)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].shape == (3, 3, 3, 2, 8)
    outs[lowering] = module.apply(variables, x)
  np.testing.assert_allclose(outs["sum2d"], outs["native"], atol=1e-5)
  np.testing.assert_allclose(outs["taps2d"], outs["native"], atol=1e-5)
  with pytest.raises(ValueError, match="not divisible by 3 groups"):
    conv.Conv3D(8, (3, 3, 3), feature_group_count=3).init(jax.random.key(0), x)


def test_configure_cpu_flags_leaves_user_flags_alone(monkeypatch):
  monkeypatch.setattr(cpu_conv3d, "CPU_XLA_FLAGS", ("--xla_cpu_some_flag=true",))
  monkeypatch.setenv("XLA_FLAGS", "--user_flag")
  assert conv.configure_cpu_flags() is False
  assert os.environ["XLA_FLAGS"] == "--user_flag"
  monkeypatch.delenv("XLA_FLAGS")
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert conv.configure_cpu_flags() is False
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setattr(cpu_conv3d, "CPU_XLA_FLAGS", ())
  assert conv.configure_cpu_flags() is False  # nothing to set
  jax.devices()  # backend initialised: flags could no longer take effect
  with pytest.warns(UserWarning, match="already initialised"):
    assert conv.configure_cpu_flags(host_devices=2) is False
  assert "XLA_FLAGS" not in os.environ
  assert jax.config.jax_num_cpu_devices == -1


def test_configure_cpu_flags_sets_flags_before_backend_init(tmp_path):
  """In a fresh interpreter: flags land in XLA_FLAGS and take effect (2 host devices)."""
  script = ("from darkjax.layers import conv\n"
            "import os, jax\n"
            "assert conv.configure_cpu_flags(host_devices=2)\n"
            "assert jax.config.jax_num_cpu_devices == -1  # the backend probe restored it\n"
            "print(os.environ['XLA_FLAGS'], len(jax.devices()))\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["--xla_force_host_platform_device_count=2", "2"]


@pytest.mark.parametrize("window, strides, padding", [
    ((3, 3, 3), (2, 2, 2), ((1, 1),) * 3),  # Hara ResNet stem
    ((2, 2, 2), (2, 2, 2), ((0, 0), (1, 1), (1, 1))),  # C3D pool5
    ((1, 2, 2), (1, 2, 2), ((0, 0),) * 3),  # C3D pool1
])
def test_separable_max_pool_matches_reduce_window(window, strides, padding):
  # Distinct values (no ties), so gradients must agree exactly too.
  x = jnp.asarray(np.random.default_rng(0).permutation(2 * 5 * 7 * 6 * 3).reshape(2, 5, 7, 6, 3),
                  jnp.float32)
  results = {}
  for lowering in ("native", "separable"):
    y, vjp = jax.vjp(lambda x: conv.max_pool3d(x, window, strides, padding, lowering), x)
    results[lowering] = (y, vjp(jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape))[0])
  np.testing.assert_array_equal(results["separable"][0], results["native"][0])
  np.testing.assert_array_equal(results["separable"][1], results["native"][1])
  with pytest.raises(ValueError, match="max-pool lowering 'fast'"):
    conv.max_pool3d(x, window, strides, padding, "fast")


# Which lowering every platform-aware op of each model chooses, per platform compiled for
# (`targets.compiling_for`, on this CPU host): accelerators must get XLA's own ops only (the
# CPU rewrites would be slower there; on a GPU max pools as strided-slice maxima), CPU its
# rewrites. Traced with jax.eval_shape (no
# compilation), forward and gradient, for the zoo's tiny families and every paper's deployed
# model.
_NATIVE_ONLY = {"conv3d:native", "conv3d_kernel_grad:xla", "max_pool3d:native",
                "depthwise:native", "conv2d:plain", "attention:xla"}
_LOWERING_CASES = ("small3d_tiny", "resnet3d_tiny", "resnext3d_tiny", "c3d_tiny",
                   "r2plus1d_tiny_test", "dinet_synthetic", "dtcm_synthetic", "lift_synthetic",
                   "twostream_synthetic", "actlumos_synthetic")


def _traced_lowerings(case: str, platform: str, tmp_path) -> dict[str, int]:
  import importlib  # pylint: disable=import-outside-toplevel
  from darkjax.tools import predict_checkpoint  # pylint: disable=import-outside-toplevel
  from run_configs import quiet  # pylint: disable=import-outside-toplevel
  module = "configs." + (case if case.endswith("_synthetic") else "synthetic")
  config = importlib.import_module(module).get_config(f"runlocal,data_dir={tmp_path}")
  config = quiet(config) if case.endswith("_synthetic") else quiet(config, **{"model.name": case})
  task = task_lib.load_task(config, num_classes=5)
  sample = predict_checkpoint.sample_inputs(task)
  inputs = {k: jnp.zeros(v.shape, v.dtype) for k, v in sample.items()}
  with targets.compiling_for(platform), conv.record_lowerings() as chosen:
    variables = jax.eval_shape(task.init_variables, jax.random.key(0), inputs)
    jax.eval_shape(jax.grad(lambda v: task.predict(v, inputs).astype(jnp.float32).sum()),
                   variables)
  return dict(chosen)


@pytest.mark.parametrize("case", _LOWERING_CASES)
def test_accelerators_get_native_ops_and_cpu_its_rewrites(case, tmp_path):
  chosen = _traced_lowerings(case, "tpu", tmp_path)
  assert chosen and set(chosen) <= _NATIVE_ONLY, chosen
  # GPU: XLA's own ops too: the (2+1)D networks' factorised convs XLA's 3D ones, laid out
  # channels-last (targets.compiler_options), full ungrouped kernels channels-last 2D ones
  # (frames2d), except in a network with grouped convs (3D-ResNeXt: native after its frames2d
  # stem, conv.network_lowering, channels-last too, its groups bundled: conv.gpu_group_bundle)
  chosen = _traced_lowerings(case, "gpu", tmp_path)
  gpu_ops = {"conv3d:frames2d", "conv3d_groups:bundled", "attention:cudnn",
             "max_pool3d:separable", "conv_channels:aligned"}
  assert chosen and set(chosen) <= _NATIVE_ONLY | gpu_ops, chosen
  # max pools on a GPU (conv.choose_pool_lowering): C3D's non-overlapping ones as running maxima
  # of strided slices, 3D-ResNet's overlapping stem pool as nn.max_pool
  if case.startswith("c3d") or case == "twostream_synthetic":
    assert chosen["max_pool3d:separable"] > 0 and "max_pool3d:native" not in chosen, chosen
  elif "max_pool3d:native" in chosen or "max_pool3d:separable" in chosen:
    assert case.startswith(("resnet3d", "resnext3d")), chosen
  nhwc = {"xla_gpu_force_conv_nhwc": True}
  if case == "resnext3d_tiny":
    # the stem's conv1 only: one per traced forward pass, as its max pool
    assert chosen["conv3d:frames2d"] == chosen["max_pool3d:native"] > 0, chosen
    assert chosen["conv3d:native"] > 0, chosen
    assert chosen["conv3d_groups:bundled"] > 0, chosen   # one per grouped conv
    assert targets.compiler_options("gpu") == nhwc
  elif case in ("r2plus1d_tiny_test", "lift_synthetic", "actlumos_synthetic"):
    assert "conv3d:frames2d" not in chosen and chosen["conv3d:native"] > 0, chosen
    assert "conv3d_groups:bundled" not in chosen, chosen
    assert targets.compiler_options("gpu") == nhwc
  else:
    assert chosen["conv3d:frames2d"] > 0 and "conv3d:native" not in chosen, chosen
    assert targets.compiler_options("gpu") == nhwc
  chosen = _traced_lowerings(case, "cpu", tmp_path)
  assert set(chosen) - _NATIVE_ONLY, chosen     # the same trace on CPU takes its rewrites
  assert not {k for k in chosen if k.endswith(":native")}, chosen


def test_record_lowerings_counts_only_inside_its_block():
  x, k = _inputs((1, 4, 6, 6, 3), (3, 3, 3), 4, 1)
  with conv.record_lowerings() as outer:
    jax.eval_shape(lambda: conv.conv3d(x, k, padding=((1, 1),) * 3, lowering="sum2d"))
    with conv.record_lowerings() as inner:
      jax.eval_shape(lambda: conv.max_pool3d(x, (1, 2, 2), (1, 2, 2), lowering="separable"))
  jax.eval_shape(lambda: conv.conv3d(x, k, lowering="native"))
  assert inner == {"max_pool3d:separable": 1}
  assert outer["conv3d:sum2d"] == 1 and "max_pool3d:separable" not in outer
  assert not any(key.startswith("conv3d:native") for key in outer)


@pytest.mark.parametrize("kernel, strides, padding, groups", [
    ((1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)), 1),
    ((3, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 0)), 1),
    ((3, 1, 1), (1, 2, 2), ((1, 1), (0, 0), (0, 0)), 1),
    ((1, 1, 1), (2, 2, 2), ((0, 0), (0, 0), (0, 0)), 1),
    ((3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 1),   # temporal taps stacked
    ((1, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 1),
    ((3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 2),   # grouped: taps group-major
    ((3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1)), 2),
])
def test_frames2d_runs_every_kernel_as_2d_convs(kernel, strides, padding, groups):
  """frames2d: every convolution of the forward pass and both gradients is 2D, grouped kernels'
  too (their values: test_lowerings_match_native_values_and_gradients)."""
  x, k = _inputs((1, 4, 6, 6, 4), kernel, 6, groups)
  fn = lambda x, k: conv.conv3d(x, k, strides, padding, groups, "frames2d")
  y, vjp = jax.vjp(fn, x, k)
  jaxpr = jax.make_jaxpr(lambda x, k, g: jax.vjp(fn, x, k)[1](g))(x, k, y).jaxpr
  shapes = _jaxpr_conv_shapes(jaxpr)
  assert len(shapes) == 3 and {len(s) for s in shapes} == {4}, shapes


def test_gpu_pointwise_gemms_run_1x1x1_convs_as_matmuls_with_the_same_values():
  """Inside pointwise_gemms(True), compiling for a GPU, `auto` gives ungrouped (1, 1, 1) kernels,
  strided ones too, the "pointwise" lowering (one matmul over channels: a GEMM, no cuDNN
  convolution in the forward pass or either gradient) with the native conv's values and
  gradients; other kernels, grouped ones and other platforms keep their choice, and so does a GPU
  outside the block. A network with grouped convs (3D-ResNeXt) then leaves its convs to `auto`
  (conv.network_lowering): its (1, 1, 1) convs matmuls, its grouped ones native."""
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 6, 8), jnp.bfloat16)
  k = (0.2 * jax.random.normal(jax.random.key(1), (1, 1, 1, 8, 16))).astype(jnp.bfloat16)
  loss = lambda fn: lambda x, k: jnp.sum(fn(x, k).astype(jnp.float32) ** 2)   # noqa: E731
  for strides in ((1, 1, 1), (2, 2, 2)):
    fn = lambda x, k, lowering="auto": conv.conv3d(x, k, strides, lowering=lowering)  # noqa: E731
    grad = jax.value_and_grad(loss(fn), (0, 1))
    with targets.compiling_for("gpu"), conv.pointwise_gemms(True), \
        conv.record_lowerings() as chosen:
      jaxpr = jax.make_jaxpr(grad)(x, k).jaxpr
      got = jax.jit(grad)(x, k)
    assert chosen["conv3d:pointwise"] == 1 and "conv3d:native" not in chosen, chosen
    assert not _jaxpr_conv_shapes(jaxpr), strides   # matmuls, no convolution
    want = jax.jit(jax.value_and_grad(loss(functools.partial(fn, lowering="native")), (0, 1)))(
        x, k)
    scale = max(float(jnp.max(jnp.abs(leaf.astype(jnp.float32)))) for leaf in jax.tree.leaves(want))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                 rtol=2e-2, atol=1e-2 * scale, err_msg=str(strides))
  cases = (("gpu", True, (1, 1, 1), 1, "pointwise"), ("gpu", False, (1, 1, 1), 1, "native"),
           ("gpu", True, (1, 1, 1), 2, "native"), ("gpu", True, (1, 3, 3), 1, "native"),
           ("tpu", True, (1, 1, 1), 1, "native"), ("cpu", True, (1, 1, 1), 1, "pointwise"),
           ("cpu", True, (1, 3, 3), 1, "sum2d"))
  for platform, on, kernel, groups, want_lowering in cases:
    with targets.compiling_for(platform), conv.pointwise_gemms(on):
      assert conv.resolve_lowering("auto", kernel + (8 // groups, 16), None, groups) == \
          want_lowering, (platform, on, kernel, groups)
  from darkjax import models  # pylint: disable=import-outside-toplevel
  model = models.build("resnext3d_tiny", 5, dtype=jnp.bfloat16)
  clip = jnp.zeros((1, 4, 32, 32, 3), jnp.bfloat16)
  for on in (False, True):
    with targets.compiling_for("gpu"), conv.pointwise_gemms(on), \
        conv.record_lowerings() as chosen:
      jax.eval_shape(lambda: model.init(jax.random.key(0), clip, train=False))
    assert ("conv3d:pointwise" in chosen) == on, chosen
    assert chosen["conv3d:native"] > 0 and chosen["conv3d_groups:bundled"] > 0, chosen


def test_gpu_group_bundle_widens_grouped_convs_with_the_same_values():
  """Compiling for a GPU, a native grouped conv runs with its groups bundled up to N input
  channels a group (block-diagonal kernels: 8 groups of 4 channels as 2 of 16; N is
  GROUP_BUNDLE_CHANNELS unless gpu_group_bundle sets it) with the unbundled conv's values and
  gradients, the kernel's gradient as its own shape; not with 0, not on a TPU, not inside
  native_lowering()."""
  from darkjax.layers import cpu_conv3d as cpu  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 6, 32), jnp.bfloat16)
  k = (0.2 * jax.random.normal(jax.random.key(1), (3, 3, 3, 4, 32))).astype(jnp.bfloat16)
  fn = lambda x, k: conv.conv3d(x, k, padding=((1, 1),) * 3, feature_group_count=8,  # noqa: E731
                                lowering="native")

  def grad(x, k):   # a fresh function each time: settings act at trace time
    return jax.value_and_grad(lambda x, k: jnp.sum(fn(x, k).astype(jnp.float32) ** 2), (0, 1))(
        x, k)

  def groups_traced(jaxpr):
    found = []
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        found.append(eqn.params["feature_group_count"] * eqn.params["batch_group_count"])
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        found += groups_traced(sub)
    return found
  results = {}
  for platform, channels in (("gpu", 16), ("gpu", 0), ("tpu", 16)):
    with targets.compiling_for(platform), conv.gpu_group_bundle(channels), \
        conv.record_lowerings() as chosen:
      groups = set(groups_traced(jax.make_jaxpr(lambda x, k: grad(x, k))(x, k).jaxpr))
      results[platform, channels] = jax.jit(lambda x, k: grad(x, k))(x, k)
    bundled = platform == "gpu" and channels == 16
    assert groups == ({2} if bundled else {8}), (platform, channels, groups)
    assert ("conv3d_groups:bundled" in chosen) == bundled, chosen
  assert conv.GROUP_BUNDLE_CHANNELS == 16
  with targets.compiling_for("gpu"):   # the default: bundled
    assert set(groups_traced(jax.make_jaxpr(lambda x, k: grad(x, k))(x, k).jaxpr)) == {2}
  with targets.compiling_for("gpu"), conv.native_lowering():   # XLA's own, as on every target
    assert set(groups_traced(jax.make_jaxpr(lambda x, k: grad(x, k))(x, k).jaxpr)) == {8}
  want = results["gpu", 0]
  scale = max(float(jnp.max(jnp.abs(leaf.astype(jnp.float32)))) for leaf in jax.tree.leaves(want))
  for got, ref in zip(jax.tree.leaves(results["gpu", 16]), jax.tree.leaves(want)):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32),
                               rtol=2e-2, atol=1e-2 * scale)
  assert conv.group_bundle(4, 32, 32) == 8 and conv.group_bundle(16, 32, 16) == 1
  assert cpu.bundle_groups(k, 8, 4).shape == (3, 3, 3, 16, 32)


def test_gpu_pads_16bit_conv_channels_to_multiples_of_8():
  """Compiling for a GPU, ungrouped bf16 convolutions whose channels are not multiples of 8 (an
  RGB stem's 3 -> 45, C3D's stacked taps on 9 channels) run with their channels zero-padded
  (cuDNN's aligned kernels; XLA:GPU pads only f16 ones) and their output sliced back: the same
  values and gradients. Not in float32, not grouped, not on CPU or TPU, not inside
  export_lowering(), not inside align_channels(False); flax convs (precision.Conv) and the float32
  kernel gradient of a batch split over devices (precision.conv_weight_gradient) too."""
  from darkjax.layers import precision  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(0), (2, 4, 10, 10, 3), jnp.bfloat16)
  k = (0.1 * jax.random.normal(jax.random.key(1), (3, 7, 7, 3, 45))).astype(jnp.bfloat16)
  stem = dict(strides=(1, 2, 2), padding=((1, 1), (3, 3), (3, 3)))
  cases = {   # name: (function of (x, k), the aligned trace's conv output shapes)
      "native (1, 7, 7)": (lambda x, k: conv.conv3d(x, k[:1], lowering="native", **stem),
                           {(2, 6, 5, 5, 48), (1, 7, 7, 8, 48), (2, 4, 10, 10, 8)}),
      "frames2d (3, 7, 7)": (lambda x, k: conv.conv3d(x, k, lowering="frames2d", **stem),
                             {(8, 5, 5, 48), (48, 16, 7, 7), (8, 10, 10, 16)}),
      "flax 2D": (lambda x, k: precision.Conv(45, (7, 7), strides=2, dtype=x.dtype).apply(
          {"params": {"kernel": k[0], "bias": jnp.zeros(45)}}, x[:, 0]),
                  {(2, 5, 5, 48), (7, 7, 8, 48), (2, 10, 10, 8)}),
  }

  def traced(fn, x, k):
    loss = lambda x, k: jnp.sum(fn(x, k).astype(jnp.float32) ** 2)   # noqa: E731
    grad = jax.value_and_grad(loss, (0, 1))
    return set(_jaxpr_conv_shapes(jax.make_jaxpr(grad)(x, k).jaxpr)), jax.jit(grad)(x, k)
  for name, (fn, aligned) in cases.items():
    results = {}
    for platform, on in (("gpu", True), ("gpu", False), ("cpu", True), ("tpu", True)):
      with targets.compiling_for(platform), conv.align_channels(on), \
          conv.record_lowerings() as chosen:
        shapes, results[platform, on] = traced(fn, x, k)
      assert (shapes == aligned) == (platform == "gpu" and on), (name, platform, on, shapes)
      assert ("conv_channels:aligned" in chosen) == (platform == "gpu" and on), (name, chosen)
    want = results["gpu", False]
    scale = max(float(jnp.max(jnp.abs(leaf.astype(jnp.float32)))) for leaf in jax.tree.leaves(want))
    for got, ref in zip(jax.tree.leaves(results["gpu", True]), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32),
                                 rtol=2e-2, atol=1e-2 * scale, err_msg=name)
    with targets.compiling_for("gpu"), conv.record_lowerings() as chosen:   # float32: as it is
      traced(fn, x.astype(jnp.float32), k.astype(jnp.float32))
    assert "conv_channels:aligned" not in chosen, (name, chosen)
  # the float32 kernel gradient a batch split over devices takes (precision.conv_weight_gradient)
  dy = jax.random.normal(jax.random.key(2), (2, 6, 5, 5, 45), jnp.bfloat16)   # the stem's output
  grads, shapes = {}, {}
  for on in (True, False):
    def weight_gradient(x, dy):
      return precision.conv_weight_gradient(x, dy, k[:1].shape, stem["strides"], stem["padding"],
                                            None, None, ("NDHWC", "DHWIO", "NDHWC"))
    with targets.compiling_for("gpu"), conv.align_channels(on):
      shapes[on] = _jaxpr_conv_shapes(jax.make_jaxpr(weight_gradient)(x, dy).jaxpr)
      grads[on] = jax.jit(weight_gradient)(x, dy)
  assert shapes == {True: [(1, 7, 7, 8, 48)], False: [(1, 7, 7, 3, 45)]}, shapes
  assert grads[True].dtype == jnp.float32 and grads[True].shape == k[:1].shape
  np.testing.assert_allclose(grads[True], grads[False], rtol=1e-5,
                             atol=1e-5 * float(jnp.max(jnp.abs(grads[False]))))
  # grouped convs (here unbundled: bundled, its two groups of one channel are one dense conv) and
  # ONNX export keep their channels
  with targets.compiling_for("gpu"), conv.gpu_group_bundle(0), conv.record_lowerings() as chosen:
    jax.eval_shape(lambda: conv.conv3d(x[..., :2], k[:1, :, :, :1, :6], lowering="native",
                                       feature_group_count=2, **stem))
    with conv.export_lowering():
      jax.eval_shape(lambda: conv.conv3d(x, k, **stem))
  assert "conv_channels:aligned" not in chosen, chosen


def test_bfloat16_grouped_kernel_gradient_sums_its_frames_in_float32():
  """The CPU grouped kernel gradient (3D-ResNeXt's grouped convs) sums one conv per frame: in
  bfloat16 the sum over B x T frames lost precision as their count grew (3.6e-2 here, 256
  frames)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((256, 14, 14, 32)) + 0.5, jnp.float32)
  grad_out = jnp.asarray(rng.standard_normal((256, 14, 14, 32)) + 0.5, jnp.float32)
  kernel_grad = jax.jit(lambda x, g: conv2d.conv2d_grouped_kernel_grad(
      x, g, (3, 3, 4, 32), (1, 1), ((1, 1), (1, 1)), 8))
  truth = kernel_grad(x, grad_out)
  got = kernel_grad(x.astype(jnp.bfloat16), grad_out.astype(jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  error = jnp.linalg.norm(got.astype(jnp.float32) - truth) / jnp.linalg.norm(truth)
  assert float(error) < 3e-3, float(error)
