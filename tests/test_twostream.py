"""Two-stream C3D with the discriminative code layer: pinned size, p-hot codes, the paper's
equations (1)-(4) and (7)-(11) transcribed in NumPy against the Task's loss, tower loading and the
flow the towers read, the video-level classifiers and metric, the bad-input errors, and one
runlocal run end to end (report rows, pictures)."""

from __future__ import annotations

import copy
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import twostream_infar, twostream_synthetic
from darkjax import losses, models, phases
from darkjax.config import ConfigError
from darkjax.convert import io as convert_io
from darkjax.data import normalise, prepared, ops, records
from darkjax.evaluators import twostream_video
from darkjax.trainers import twostream
from darkjax import task as task_lib
from run_configs import quiet

ALPHA = 0.02


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("twostream_data"))


@pytest.fixture(scope="module")
def task(data_dir):
  config = quiet(twostream_synthetic.get_config(f"runlocal,data_dir={data_dir}"))
  return task_lib.load_task(config)


@pytest.fixture(scope="module")
def batch_and_variables(task):
  rng = np.random.default_rng(0)
  batch = {"video": rng.integers(0, 256, (2, 16, 32, 32, 1), dtype=np.uint8),
           "flow": rng.integers(100, 156, (2, 16, 32, 32, 3), dtype=np.uint8),
           "label": np.array([1, 7], np.int32)}
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  return batch, variables


def test_full_size_parameters_and_outputs_pinned():
  model = models.build("twostream_c3d", 12)
  clips = {s: jax.ShapeDtypeStruct((2, 16, 112, 112, 3), jnp.float32) for s in ("ir", "flow")}
  variables = jax.eval_shape(model.init, jax.random.key(0), clips)
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
  # Per tower: headless C3D 77,995,776 + softmax 4096*12+12 + DC layer 4096*4096+4096.
  assert count(variables["params"]["ir"]) == 77_995_776 + 49_164 + 16_781_312
  assert count(variables) == 189_652_504
  assert set(variables["params"]) == {"ir", "flow"}
  assert variables["params"]["flow"]["code"]["kernel"].shape == (4096, 4096)
  logits, out = jax.eval_shape(model.apply, variables, clips)
  assert {s: x.shape for s, x in logits.items()} == {"ir": (2, 12), "flow": (2, 12)}
  assert out["code"]["ir"].shape == (2, 4096) and out["fc7"]["flow"].shape == (2, 4096)


def test_pooling_is_a_config_key_that_reaches_both_towers():
  """`model.kwargs.pooling` sets the towers' C3D pooling ("port" keeps a 2 x 2 pool5 grid of the
  tiny towers' 2 x 2 input where Caffe's ceil mode keeps 1 x 1: fc6 reads 4x the features); the
  configs state what their variants pooled with before the key existed."""
  assert twostream_infar.get_config("").model.kwargs.pooling == "caffe"
  assert twostream_synthetic.get_config("").model.kwargs.pooling == "port"
  assert twostream_synthetic.get_config("runlocal").model.kwargs.pooling == "caffe"
  clips = {s: jax.ShapeDtypeStruct((1, 16, 32, 32, 3), jnp.float32) for s in ("ir", "flow")}
  fc6 = {}
  for pooling in ("caffe", "port"):
    config = twostream_synthetic.get_config("runlocal")
    config.model.kwargs.pooling = pooling
    model = models.build(config.model.name, 4, **config.model.kwargs)
    params = jax.eval_shape(model.init, jax.random.key(0), clips)["params"]
    fc6[pooling] = {s: params[s]["c3d"]["fc6"]["kernel"].shape[0] for s in ("ir", "flow")}
  assert fc6["port"] == {s: 4 * fc6["caffe"][s] for s in ("ir", "flow")}
  with pytest.raises(ValueError, match="pooling 'ceil' is not one of"):
    jax.eval_shape(models.build("twostream_c3d_tiny", 4, pooling="ceil").init,
                   jax.random.key(0), clips)


def test_code_size_below_class_count_fails():
  model = models.build("twostream_c3d_tiny", 12, code_size=5)
  clips = {s: jnp.zeros((1, 16, 32, 32, 3)) for s in ("ir", "flow")}
  with pytest.raises(ValueError, match=r"code size N=5 is smaller than the 12 classes.*>= 12"):
    jax.eval_shape(model.init, jax.random.key(0), clips)
  with pytest.raises(ValueError, match=r"N=5 < 12 classes"):
    losses.p_hot_codes(12, 5)


def test_p_hot_codes_blocks_and_spare_neurons():
  codes = losses.p_hot_codes(3, 6)
  np.testing.assert_array_equal(codes, np.kron(np.eye(3), np.ones((1, 2))))
  codes = losses.p_hot_codes(3, 8)            # p = 2, r = 2 spare -> classes 0 and 1
  assert codes.sum(1).tolist() == [3, 3, 2]
  assert codes[0, 6] == 1 and codes[1, 7] == 1
  codes = losses.p_hot_codes(3, 7, spare_classes=(2,))
  assert codes[2, 6] == 1 and codes.sum(1).tolist() == [2, 2, 3]
  assert (codes.sum(0) == 1).all()            # every neuron belongs to exactly one class
  with pytest.raises(ValueError, match="leaves 1 spare neurons"):
    losses.p_hot_codes(3, 7, spare_classes=(0, 1))


def _intercepting(replace):
  """Flax interceptor: a call of a module named in `replace` (tower, module name) returns the
  given value instead of running."""
  def interceptor(next_fun, args, kwargs, context):
    path = context.module.scope.path if context.module.scope is not None else ()
    key = (path[0], context.module.name) if len(path) >= 2 else None
    if context.method_name == "__call__" and key in replace:
      value = replace[key]
      return (value, {}) if context.module.name == "c3d" else value
    return next_fun(*args, **kwargs)
  return interceptor


def _numpy_heads(x, head, labels, q):
  """Eqs. (2)-(3), (5)-(7) in NumPy on fc7 features x (B, n): the code A x (+ bias), the softmax
  scores, L_c (multinomial logistic loss) and L_d = ||q - A x||^2, both batch means."""
  x = np.asarray(x, np.float64)
  w, b = (np.asarray(head["softmax"][k], np.float64) for k in ("kernel", "bias"))
  a, a_bias = (np.asarray(head["code"][k], np.float64) for k in ("kernel", "bias"))
  code = x @ a + a_bias                                           # Eq. (2), Flax kernel = A^T
  logits = x @ w + b
  scores = np.exp(logits - logits.max(1, keepdims=True))
  scores /= scores.sum(1, keepdims=True)                          # Eq. (3)
  lc = -np.mean(np.log(scores[np.arange(len(labels)), labels]))
  ld = np.mean(np.sum((q - code) ** 2, axis=1))                   # Eq. (7)
  return code, scores, lc, ld


def test_dcl_loss_and_gradients_match_eqs_2_to_10(task, batch_and_variables):
  """The Task's loss with each tower's C3D intercepted to return given fc7 features x(n), against
  the paper's formulas in NumPy: L = Lc + alpha Ld (Eq. 4) with Eqs. (2), (3), (7); Eq. (8)
  dL/dx_d = alpha dLd/dx_d, dL/dx_c = dLc/dx_c; Eq. (9) dL/dA = 2 alpha (A x - q) x^T and
  dL/dW = dLc/dW; Eq. (10) dL/dx(n) = dLc/dx(n) + 2 alpha (A x - q)^T A. Biases are kept (the
  paper drops them "for simplicity"); the batch loss is the mean over its B clips, so every
  gradient carries 1 / B."""
  batch, variables = batch_and_variables
  params = variables["params"]
  labels = np.asarray(batch["label"])
  q = task.target_codes[labels].astype(np.float64)
  b = len(labels)
  rng = np.random.default_rng(0)
  x = {s: rng.standard_normal((b, params[s]["softmax"]["kernel"].shape[0])).astype(np.float32)
       for s in ("ir", "flow")}

  def loss(params, x):
    with nn.intercept_methods(_intercepting({(s, "c3d"): x[s] for s in x})):
      return task.loss_fn(params, {}, batch, jax.random.key(3), 0.0)[0]

  value, (grads, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
  expected = 0.0
  for stream in ("ir", "flow"):
    head = params[stream]
    code, scores, lc, ld = _numpy_heads(x[stream], head, labels, q)
    expected += lc + ALPHA * ld                                                     # Eq. (4)
    xs = x[stream].astype(np.float64)
    a, w = (np.asarray(head[k]["kernel"], np.float64) for k in ("code", "softmax"))
    dlc_dlogits = (scores - np.eye(scores.shape[1])[labels]) / b
    close = lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)  # noqa
    close(grads[stream]["code"]["kernel"], 2 * ALPHA / b * xs.T @ (code - q))         # Eq. (9)
    close(grads[stream]["softmax"]["kernel"], xs.T @ dlc_dlogits)                     # Eq. (9)
    close(dx[stream], dlc_dlogits @ w.T + 2 * ALPHA / b * (code - q) @ a.T)            # Eq. (10)

    def head_outputs_loss(outputs):
      replace = {(stream, "c3d"): x[stream], (stream, "code"): outputs["code"],
                 (stream, "softmax"): outputs["logits"]}
      other = "flow" if stream == "ir" else "ir"
      replace[(other, "c3d")] = x[other]
      with nn.intercept_methods(_intercepting(replace)):
        return task.loss_fn(params, {}, batch, jax.random.key(3), 0.0)[0]

    outputs = {"code": jnp.asarray(code, jnp.float32),
               "logits": jnp.asarray(xs @ w + np.asarray(head["softmax"]["bias"]), jnp.float32)}
    d_out = jax.jit(jax.grad(head_outputs_loss))(outputs)
    close(d_out["code"], ALPHA * 2 * (code - q) / b)                                  # Eq. (8)
    close(d_out["logits"], dlc_dlogits)                                               # Eq. (8)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_layers_and_backward_recurrence_match_eqs_1_and_11(task, batch_and_variables):
  """Eq. (1), x(i) = F(W(i) x(i-1)), for the first convolution (+ its max pool) and fc6, fc7 of a
  tower; Eq. (11), dL/dW(i) = dL/dx(i) dx(i)/dW(i) and dL/dx(i-1) = dL/dx(i) dx(i)/dx(i-1), from
  Eq. (10)'s dL/dx(n) down through fc7 and fc6 (biases kept, dropout off so NumPy can follow)."""
  batch, variables = batch_and_variables
  model = models.build("twostream_c3d_tiny", task.num_classes, code_size=task.code_size,
                       backbone_kwargs={"dropout_rate": 0.0})
  no_dropout = copy.copy(task)
  no_dropout.model = model
  params = variables["params"]
  inputs = task.model_inputs(batch)
  (_, out), state = jax.jit(lambda v, x: model.apply(v, x, train=True, capture_intermediates=True,
                                                     mutable=["intermediates"]))(variables, inputs)
  grads = jax.jit(jax.grad(lambda p: no_dropout.loss_fn(p, {}, batch, jax.random.key(3), 0.0)[0])
                  )(params)
  labels = np.asarray(batch["label"])
  q = task.target_codes[labels].astype(np.float64)
  b = len(labels)
  close = lambda got, want: np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)  # noqa
  for stream in ("ir", "flow"):
    tower = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()}
             for k, layer in params[stream]["c3d"].items()}
    _, c3d_out = state["intermediates"][stream]["c3d"]["__call__"][0]
    clip = np.asarray(inputs[stream], np.float64)
    # Eq. (1), conv1: 3x3x3 convolution (padding 1), ReLU, then the 1x2x2 max pool.
    padded = np.pad(clip, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    t, h, w = clip.shape[1:4]
    conv = sum(padded[:, l:l + t, i:i + h, j:j + w] @ tower["conv1"]["kernel"][l, i, j]
               for l in range(3) for i in range(3) for j in range(3)) + tower["conv1"]["bias"]
    relu = np.maximum(conv, 0)
    pool1 = relu.reshape(b, t, h // 2, 2, w // 2, 2, -1).max(axis=(3, 5))
    close(c3d_out["stem"], pool1)
    # Eq. (1), fc6 and fc7 on pool5 flattened in C3D's (C, T, H, W) order.
    x5 = np.transpose(np.asarray(c3d_out["stage4"], np.float64), (0, 4, 1, 2, 3)).reshape(b, -1)
    z6 = x5 @ tower["fc6"]["kernel"] + tower["fc6"]["bias"]
    x6 = np.maximum(z6, 0)
    z7 = x6 @ tower["fc7"]["kernel"] + tower["fc7"]["bias"]
    x7 = np.maximum(z7, 0)
    close(out["fc7"][stream], x7)
    # Eq. (10) at x(n) = x7, then Eq. (11) through fc7 and fc6.
    code, scores, _, _ = _numpy_heads(x7, params[stream], labels, q)
    a, w_softmax = (np.asarray(params[stream][k]["kernel"], np.float64)
                    for k in ("code", "softmax"))
    dx7 = (scores - np.eye(scores.shape[1])[labels]) / b @ w_softmax.T \
        + 2 * ALPHA / b * (code - q) @ a.T
    dz7 = dx7 * (z7 > 0)
    close(grads[stream]["c3d"]["fc7"]["kernel"], x6.T @ dz7)                # dL/dW(7)
    dz6 = dz7 @ tower["fc7"]["kernel"].T * (z6 > 0)                          # dL/dx(6) -> z6
    close(grads[stream]["c3d"]["fc6"]["kernel"], x5.T @ dz6)                # dL/dW(6)


def test_without_dcl_the_loss_is_cross_entropy_only(data_dir, batch_and_variables):
  config = quiet(twostream_synthetic.get_config(f"runlocal,data_dir={data_dir},dcl=False"))
  task = task_lib.load_task(config)
  batch, _ = batch_and_variables
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  assert "code" not in variables["params"]["ir"]
  loss, (_, metrics) = jax.jit(task.loss_fn)(variables["params"], {}, batch, jax.random.key(1),
                                             0.0)
  np.testing.assert_allclose(loss, metrics["ir/ce_loss"] + metrics["flow/ce_loss"], rtol=1e-6)
  assert not any("dcl" in k for k in metrics)


def test_towers_load_from_c3d_and_refuse_the_other_stream(task, batch_and_variables, tmp_path):
  _, variables = batch_and_variables
  variables = jax.device_get(variables)
  c3d = jax.tree.map(lambda x: np.full(x.shape, 0.5, x.dtype), variables["params"]["ir"]["c3d"])
  convert_io.save_variables(str(tmp_path / "c3d"), {"params": c3d}, {"arch": "c3d_tiny"})
  loaded = twostream.load_tower(variables, "flow", str(tmp_path / "c3d"))
  np.testing.assert_array_equal(loaded["params"]["flow"]["c3d"]["conv1"]["kernel"], 0.5)
  np.testing.assert_array_equal(loaded["params"]["ir"]["c3d"]["conv1"]["kernel"],
                                variables["params"]["ir"]["c3d"]["conv1"]["kernel"])
  flow_only = {"params": {"flow": variables["params"]["flow"]}}
  convert_io.save_variables(str(tmp_path / "flow_run"), flow_only, {"source": "test"})
  with pytest.raises(twostream.TowerInitError,
                     match=r"tower_init.ir=.*holds the tower\(s\) \['flow'\], not the 'ir' tower"):
    twostream.load_tower(variables, "ir", str(tmp_path / "flow_run"))


def test_missing_flow_stream_names_the_prepare_flag(data_dir):
  config = twostream_synthetic.get_config(f"runlocal,data_dir={data_dir}")
  config.twostream.flow_source = "stream"
  config.input.streams = ("flow",)
  with pytest.raises(twostream.MissingFlowStreamError,
                     match=r"does not have \(its extra streams: \['day', 'ir'\].*--flow"):
    task_lib.load_task(config)


def _infar_with_flow(directory: str, method: str) -> str:
  """A 2-class InfAR-like dataset whose flow stream the manifest says `method` computed."""
  rng = np.random.default_rng(0)

  def examples(n, split):
    for i in range(n):
      yield dict(video=rng.integers(0, 255, (20, 24, 32, 1), dtype=np.uint8), label=i % 2,
                 video_id=f"{split}_{i}",
                 streams={"flow": rng.integers(100, 156, (20, 24, 32, 3), dtype=np.uint8)})
  records.write_dataset(directory, "infar", ["fight", "hug"],
                        {"train1": examples(4, "train"), "test1": examples(2, "test")}, fps=25,
                        streams=("flow",), metadata={"flow": {"method": method, "scale": 8.0}})
  return directory


def test_the_flow_stream_must_come_from_the_configured_method(tmp_path):
  """The paper's flow is TV-L1 (`twostream.flow_method`); a dataset prepared with another method
  fails at once naming both ways out."""
  data = _infar_with_flow(str(tmp_path / "farneback"), "farneback")
  config = twostream_infar.get_config(f"runlocal,data_dir={data}")
  assert config.twostream.flow_method == "tvl1"
  with pytest.raises(twostream.FlowMethodError,
                     match=r"computed with 'farneback', config.twostream.flow_method is 'tvl1'.*"
                           r"--flow --flow-method tvl1.*--config.twostream.flow_method=farneback"):
    task_lib.load_task(config)
  config.twostream.flow_method = "farneback"
  task_lib.load_task(config)
  task_lib.load_task(twostream_infar.get_config(
      f"runlocal,data_dir={_infar_with_flow(str(tmp_path / 'tvl1'), 'tvl1')}"))


def test_flow_tower_input_is_the_papers_encoding_then_the_weights_normalisation(tmp_path):
  """Stored flow: x, y, magnitude each 128 + 8 * value. The tower sees x, y centred at 128 and the
  magnitude from 0 (the paper: x, y "centered around 128"), normalised as the Sports-1M C3D reads
  images (minus its mean, no scaling), channels in flow order."""
  data = _infar_with_flow(str(tmp_path / "tvl1"), "tvl1")
  task = task_lib.load_task(twostream_infar.get_config(f"runlocal,data_dir={data},sports1m=/w"))
  stored = np.stack([np.full((1, 16, 32, 32), v, np.uint8) for v in (140, 120, 150)], -1)
  streams = {"video": np.zeros((1, 16, 32, 32, 1), np.uint8), "flow": stored}
  flow = np.asarray(task.model_inputs(streams)["flow"])[0, 0, 0, 0]
  mean = np.array(normalise.STATS["c3d_sports1m"][0])
  np.testing.assert_allclose(flow, np.array([140, 120, 150 - 128]) - mean, rtol=1e-6)


def test_infar_without_data_fails_fast_with_the_prepare_command(tmp_path):
  config = twostream_infar.get_config(f"data_dir={tmp_path / 'infar'}")
  # The hint names the flow method the config reads (TV-L1), not bare --flow (farneback), which
  # the flow tower would then refuse.
  with pytest.raises(prepared.DatasetNotPreparedError,
                     match=r"python -m darkjax.data.prepare --dataset infar(.|\n)*"
                           r"add --flow --flow-method tvl1 to that prepare command"):
    task_lib.load_task(config)


def test_knn_probabilities_and_k_check():
  train_codes = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float64)
  train_labels = np.array([0, 0, 0, 1, 1, 1])
  test = np.array([[0.0, 0.0], [10.0, 10.0]])
  probs = twostream_video.knn_probabilities(test, train_codes, train_labels, 2, k=2, gamma=0.05)
  # test 0: class 0's two nearest at 0 and 1 -> d = 0.5; class 1's at sqrt(200), sqrt(221).
  # test 1: class 0's two nearest at sqrt(181) twice; class 1's at 0 and 1.
  d = np.array([[0.5, (np.sqrt(200) + np.sqrt(221)) / 2], [np.sqrt(181), 0.5]])
  s = np.exp(-0.05 * d ** 2)
  np.testing.assert_allclose(probs, s / s.sum(1, keepdims=True), rtol=1e-12)
  far = twostream_video.knn_probabilities(test * 1e3, train_codes, train_labels, 2, k=2, gamma=0.05)
  assert np.isfinite(far).all() and np.allclose(far.sum(1), 1)   # no 0/0 when exp underflows
  with pytest.raises(ValueError, match=r"k=4 but class 'a' has only 3 training videos.*1\.\.3"):
    twostream_video.knn_probabilities(test, train_codes, train_labels, 2, k=4, gamma=0.05,
                            class_names=["a", "b"])


def test_mean_class_precision():
  labels = np.array([0, 0, 1, 1, 2])
  predicted = np.array([0, 1, 1, 1, 1])
  # precision: class 0: 1/1, class 1: 2/4, class 2 never predicted: 0.
  assert twostream_video.mean_class_precision(predicted, labels, 3) == pytest.approx(
      (1 + 0.5 + 0) / 3)


def test_the_papers_ap_values_are_counts_of_its_240_test_videos():
  """Why the AP column reports top-1 accuracy: 11 of the 13 values of Tables 2-3 (and the 79.2%
  fusion) are k / 240 for InfAR's 12 x 20 test videos at the paper's two decimals; a mean of
  per-class precisions (TP / predicted) is a count over 240 only by accident."""
  values = [48.75, 52.91, 54.58, 69.58, 72.91, 75.42, 32.08, 76.66,    # Table 2
            74.0, 77.5, 71.25, 70.42, 79.2]                            # Table 3, Sec. 3.2.3
  counts = [v * 240 / 100 for v in values]
  # Two-decimal values truncate or round k / 240 (52.916.. -> 52.91, 76.666.. -> 76.66).
  on_grid = [v for v, c in zip(values, counts) if abs(c - round(c)) * 100 / 240 < 0.01]
  assert len(on_grid) == 11 and set(values) - set(on_grid) == {74.0, 79.2}
  # On a balanced split top-1 accuracy equals the mean per-class recall.
  labels = np.repeat(np.arange(12), 20)
  predicted = np.where(np.arange(240) % 7 == 0, (labels + 1) % 12, labels)
  recall = np.mean([np.mean(predicted[labels == c] == c) for c in range(12)])
  assert np.mean(predicted == labels) == pytest.approx(recall)


def test_fusion_nets_fit_separable_codes():
  rng = np.random.default_rng(0)
  y = np.arange(20) % 4
  x = np.eye(4)[y] * 2 + rng.normal(0, 0.1, (20, 4))
  for hidden in (0, 50):
    probs = twostream_video.fit_fusion_net(x, y, x, 4, hidden, 200, 0.05, seed=0)
    assert (probs.argmax(1) == y).mean() == 1.0


def test_video_clips_are_non_overlapping_and_centre_cropped():
  frames = np.arange(40, dtype=np.uint8)[:, None, None, None] * np.ones((1, 12, 20, 1), np.uint8)
  example = {"video": frames, "flow": np.repeat(frames, 3, -1), "label": 0}
  spec = ops.ClipSpec(frames=16, resize=(10, 16), crop_size=8)
  clips = twostream_video.video_clips(example, spec, ("flow",))
  assert clips["video"].shape == (2, 16, 8, 8, 1) and clips["flow"].shape == (2, 16, 8, 8, 3)
  np.testing.assert_array_equal(clips["video"][:, :, 0, 0, 0], [np.arange(16), np.arange(16, 32)])
  short = twostream_video.video_clips({"video": frames[:10], "label": 0}, spec)
  np.testing.assert_array_equal(short["video"][0, :, 0, 0, 0], np.arange(16) % 10)
  assert twostream_video.clip_starts(47, 16) == [0, 16] and twostream_video.clip_starts(3, 16) == [0]


def test_runlocal_end_to_end_writes_tables_and_pictures(data_dir, tmp_path):
  config = quiet(twostream_synthetic.get_config(f"runlocal,data_dir={data_dir}"))
  results = phases.run_phases(config, str(tmp_path))
  for row in ("ir/softmax", "ir/knn", "flow/softmax", "flow/knn", "late_fusion1", "late_fusion2",
              "nn1_fusion", "nn2_fusion"):
    assert 0.0 <= results[f"video/{row}/accuracy"] <= 1.0
    assert 0.0 <= results[f"video/{row}/mean_precision"] <= 1.0
  assert results["video/num_videos"] == 20   # 10 classes x 2 test videos, each counted once
  report = (tmp_path / "report.md").read_text()
  # the rows, and no paper AP beside them: the paper's figures are InfAR's
  assert "| Late fusion 2 (k-NN, weighted) |" in report and "77.50" not in report
  assert "On `synthetic`: the paper's AP, measured on InfAR, is not beside them." in report
  assert (tmp_path / "video_codes.png").stat().st_size > 1000
  assert (tmp_path / "video_confusion.png").stat().st_size > 1000
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("video/late_fusion2/mean_precision" in line for line in lines)


def test_a_knn_k_above_the_smallest_classs_training_videos_is_refused_before_training(
    task, data_dir, tmp_path):
  """The manifest counts each part's videos per class (records.DatasetWriter): a kNN `k` no
  class can give is refused when the evaluator is built, not after training at the first
  evaluation."""
  config = quiet(twostream_synthetic.get_config(f"runlocal,data_dir={data_dir}"))
  split = records.load_manifest(config.input.data.dir)["splits"]["train"]
  assert sum(split["class_counts"]) == split["num_examples"]
  smallest = min(split["class_counts"])
  config.evals.video.k = smallest + 1
  with pytest.raises(ConfigError, match=rf"config.evals.video.k: k={smallest + 1} but class "
                     rf"'\w+' has only {smallest} training videos.*a value in 1..{smallest}"):
    phases.run_phases(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_input_resize_to_fixed_size_before_the_crop():
  example = {"video": np.zeros((20, 24, 40, 1), np.uint8), "label": 3}
  spec = ops.ClipSpec(frames=16, resize=(128, 171), crop_size=112, flip=False)
  clip = ops.train_clip(example, np.random.default_rng(0), spec)
  assert clip["video"].shape == (16, 112, 112, 1)
  assert ops.resize_frames(example["video"], spec).shape == (20, 128, 171, 1)
  with pytest.raises(ValueError, match=r"input.resize must be \(H, W\) with both > 0"):
    ops.ClipSpec(resize=(128, 0))
