"""3D-DiNet: model shapes and parameter count, the GRL on the real model, the paper's equations
transcribed in NumPy (Eq. 1, the 3D convolution; Eq. 4, the objective, with the updates of Eqs.
5-7; Eq. 8, the lambda schedule), the DANN task (target labels ignored, lambda schedule reaching
the backbone), exact resume of the zipped pipelines, the configs, the experiment table, and
`python -m darkjax.main` end to end.

The GRL unit tests themselves (identity forward, -lam * g backward, dann_lambda values, one hand
computed DANN SGD step) live in tests/test_grl.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import dinet_infar, dinet_synthetic
from darkjax import metrics as metrics_lib
from darkjax import models, train
from darkjax.data import prepared, records
from darkjax.layers.conv import Conv3D
from darkjax.layers.grl import dann_lambda
from darkjax.trainers import dinet as dinet_trainer
from run_configs import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, steps: int = 10, target: str = "ir", **overrides):
  config = dinet_synthetic.get_config(f"runlocal,steps={steps},target={target},data_dir={data_dir}")
  config.log_every = 1
  return quiet(config, **overrides)   # dotted keys: {"input.prefetch": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("dinet_synthetic"))
  prepared.open_dataset(tiny_config(directory).input.data)   # generated once for the module
  return directory


@pytest.fixture(scope="module")
def task_and_batch(data_dir):
  task = dinet_trainer.Task(tiny_config(data_dir))
  batch = next(iter(task.train_dataset(8)))
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  params = variables.pop("params")
  return task, batch, params, variables


# ---------------------------------------------------------------- model
def test_full_size_resnext_dinet_parameter_count():
  model = models.build("dinet", num_classes=12)   # resnext3d_101 backbone by default
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 112, 112, 3)))
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
  params = shapes["params"]
  # The extractor is exactly the zoo backbone (so converted backbone weights fit under it).
  backbone = jax.eval_shape(models.build("resnext3d_101", num_classes=0).init, jax.random.key(0),
                            jnp.zeros((1, 16, 112, 112, 3)))
  assert jax.tree.map(lambda a: a.shape, params["extractor"]) == \
      jax.tree.map(lambda a: a.shape, backbone["params"])
  assert count(params["extractor"]) == 47_521_216
  assert count(params["head"]) == 2048 * 12 + 12
  assert count(params["domain_head"]) == (2048 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 + 1)
  assert params["domain_head"]["fc3"]["kernel"].shape == (1024, 1)


@pytest.fixture(scope="module")
def tiny_model():
  model = models.build("dinet_tiny", num_classes=5)
  x = jax.random.normal(jax.random.key(1), (4, 8, 16, 16, 3))
  return model, x, jax.jit(model.init)(jax.random.key(0), x)


def test_tiny_forward_outputs_and_identity_grl(tiny_model):
  model, x, variables = tiny_model
  apply = jax.jit(model.apply)
  logits, out = apply(variables, x, grl_lambda=0.3)
  assert logits.shape == (4, 5) and out["domain_logits"].shape == (4,)
  assert out["features"].shape == (4, 16) and "stage4" in out
  _, out_other = apply(variables, x, grl_lambda=1.0)   # the GRL forward is the identity
  np.testing.assert_array_equal(out["domain_logits"], out_other["domain_logits"])
  features, _ = jax.jit(models.build("dinet_tiny", num_classes=0).apply)(
      {"params": {k: v for k, v in variables["params"].items() if k != "head"},
       "batch_stats": variables["batch_stats"]}, x)
  np.testing.assert_allclose(features, out["features"], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="domain_hidden"):
    jax.eval_shape(models.build("dinet_tiny", num_classes=5, domain_hidden=(8,)).init,
                   jax.random.key(0), x)


def test_grl_on_real_model_plain_head_gradients_reversed_scaled_extractor_gradients(tiny_model):
  model, x, variables = tiny_model
  domains = jnp.array([0.0, 0.0, 1.0, 1.0])
  params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
  lam = 0.37

  def domain_loss(params):
    _, out = model.apply({"params": params, **stats}, x, grl_lambda=lam)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(out["domain_logits"], domains))

  grads = jax.jit(jax.grad(domain_loss))(params)

  # The same loss assembled from the two halves by hand, with no GRL anywhere.
  def extractor_features(extractor_params):
    return model.apply({"params": {**params, "extractor": extractor_params}, **stats}, x,
                       method=lambda m, v: m.features(v)[0])

  def head_loss(head_params, features):
    logits = model.apply({"params": {**params, "domain_head": head_params}}, features,
                         method=lambda m, f: m.domain_head(f))
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, domains))

  @jax.jit
  def by_hand(params):
    features, features_vjp = jax.vjp(extractor_features, params["extractor"])
    head_grads, feature_grads = jax.grad(head_loss, argnums=(0, 1))(params["domain_head"],
                                                                    features)
    return head_grads, features_vjp(feature_grads)[0]

  head_grads, plain_extractor_grads = by_hand(params)

  # Domain head: plain gradients. Extractor: reversed and scaled by lam. Action head: none.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads["domain_head"], head_grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, -lam * b, rtol=1e-4, atol=1e-7),
               grads["extractor"], plain_extractor_grads)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(plain_extractor_grads)) > 1e-4
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["head"]))


# ---------------------------------------------------------------- the paper's equations in NumPy
def test_eq1_3d_convolution():
  """Eq. (1): V_ij^{x,y,t} = b_ij + phi(sum_m sum_h sum_w sum_l W_ijm^{h,w,l} V_(i-1)m^{x+h,y+w,t+l}).
  The backbones' convolution (bias 0, as in the ResNe(X)ts, then ReLU) against that sum; with a
  bias, the code's phi(b + sum) (C3D), where the printed equation adds b after phi."""
  rng = np.random.default_rng(0)
  v = rng.standard_normal((1, 5, 6, 7, 2)).astype(np.float32)    # (batch, t, x, y, m)
  w = rng.standard_normal((3, 3, 3, 2, 4)).astype(np.float32)    # (l, h, w, m, j)
  b = rng.standard_normal(4).astype(np.float32)

  def eq1(v, w, b, bias_inside_phi):
    big_l, big_h, big_w = w.shape[:3]
    out = np.zeros((v.shape[1] - big_l + 1, v.shape[2] - big_h + 1, v.shape[3] - big_w + 1,
                    w.shape[-1]))
    for t, x, y, j in np.ndindex(*out.shape):
      total = sum(w[l, h, ww, m, j] * v[0, t + l, x + h, y + ww, m]
                  for m in range(v.shape[-1]) for h in range(big_h) for ww in range(big_w)
                  for l in range(big_l))
      out[t, x, y, j] = max(total + b[j], 0.0) if bias_inside_phi else b[j] + max(total, 0.0)
    return out

  for use_bias in (False, True):
    layer = Conv3D(4, (3, 3, 3), use_bias=use_bias, lowering="native")
    params = {"kernel": w, **({"bias": b} if use_bias else {})}
    ours = jax.nn.relu(layer.apply({"params": params}, v))[0]
    expected = eq1(v, w, b if use_bias else np.zeros(4, np.float32), bias_inside_phi=use_bias)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_eq8_lambda_schedule_is_the_papers():
  task = dinet_trainer.Task.__new__(dinet_trainer.Task)   # grl_lambda reads only the config
  task.config = dinet_infar.get_config("pretrained=/w")
  for p in (0.0, 0.1, 0.37, 0.5, 1.0):
    np.testing.assert_allclose(float(task.grl_lambda(jnp.float32(p))),
                               2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0, rtol=1e-6, atol=1e-7)


def _features_intercepted(features):
  """Flax interceptor: the extractor returns `features` (the f of Eq. 4) instead of running."""
  def interceptor(next_fun, args, kwargs, context):
    if context.module.name == "extractor" and context.method_name == "__call__":
      return features, {}
    return next_fun(*args, **kwargs)
  return interceptor


def _eq4_numpy(f, y, domains, params, lam):
  """Eq. (4) and the gradients of its two sums, by hand: F = sum_{d_i=0} L_a^i - lam sum_i L_d^i,
  L_a the action head's softmax cross-entropy ("logistic regression loss"), L_d the 3-layer domain
  classifier's binomial cross-entropy. Returns F, both sums and their gradients."""
  f = np.asarray(f, np.float64)
  src = domains == 0
  head = {k: np.asarray(v, np.float64) for k, v in params["head"].items()}
  dom = {layer: {k: np.asarray(v, np.float64) for k, v in p.items()}
         for layer, p in params["domain_head"].items()}
  # Action classifier on the source clips.
  logits = f[src] @ head["kernel"] + head["bias"]
  logits -= logits.max(1, keepdims=True)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  sum_a = -np.sum(np.log(p[np.arange(len(y)), y]))
  d_logits = p - np.eye(p.shape[1])[y]
  grads_a = {"head": {"kernel": f[src].T @ d_logits, "bias": d_logits.sum(0)},
             "f": np.zeros_like(f)}
  grads_a["f"][src] = d_logits @ head["kernel"].T
  # Domain classifier on every clip: fc1 -> ReLU -> fc2 -> ReLU -> fc3 (one logit).
  h1 = np.maximum(f @ dom["fc1"]["kernel"] + dom["fc1"]["bias"], 0)
  h2 = np.maximum(h1 @ dom["fc2"]["kernel"] + dom["fc2"]["bias"], 0)
  z = (h2 @ dom["fc3"]["kernel"] + dom["fc3"]["bias"])[:, 0]
  sum_d = np.sum(np.maximum(z, 0) - z * domains + np.log1p(np.exp(-np.abs(z))))
  dz = (1 / (1 + np.exp(-z)) - domains)[:, None]
  dh2 = dz @ dom["fc3"]["kernel"].T * (h2 > 0)
  dh1 = dh2 @ dom["fc2"]["kernel"].T * (h1 > 0)
  grads_d = {"domain_head": {"fc3": {"kernel": h2.T @ dz, "bias": dz.sum(0)},
                             "fc2": {"kernel": h1.T @ dh2, "bias": dh2.sum(0)},
                             "fc1": {"kernel": f.T @ dh1, "bias": dh1.sum(0)}},
             "f": dh1 @ dom["fc1"]["kernel"].T}
  return sum_a - lam * sum_d, sum_a, sum_d, grads_a, grads_d


def test_eq4_objective_and_eqs_5_to_7_updates(data_dir):
  """The Task's loss on features f (the extractor intercepted), dropout off, against Eq. (4)
  transcribed in NumPy: the value is (sum_{d=0} L_a + sum L_d) / n_source (the GRL supplies the
  -lambda on the way back), and its gradients are Eq. (4)'s, divided by n_source:
  d/d theta_a = d(sum L_a)/d theta_a (Eq. 6), d/d theta_d = d(sum L_d)/d theta_d (Eq. 7: the domain
  classifier minimises L_d), d/df = d(sum L_a)/df - lambda d(sum L_d)/df (Eq. 5 through f)."""
  task = dinet_trainer.Task(tiny_config(data_dir, **{"model.kwargs.head_dropout": 0.0,
                                                     "model.kwargs.domain_dropout": 0.0,
                                                     "dinet.domain_loss_weight": 1.0}))
  batch = next(iter(task.train_dataset(8)))
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  params = variables.pop("params")
  n_source = batch["source_label"].shape[0]
  rng = np.random.default_rng(1)
  f = rng.standard_normal((2 * n_source, params["head"]["kernel"].shape[0])).astype(np.float32)
  progress = 0.3
  lam = 2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0                  # Eq. (8)

  def loss(params, f):
    with nn.intercept_methods(_features_intercepted(f)):
      return task.loss_fn(params, variables, batch, jax.random.key(2), jnp.float32(progress))

  (value, (_, metrics)), (grads, df) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1),
                                                                   has_aux=True))(params, f)
  domains = np.repeat([0.0, 1.0], n_source)
  y = np.asarray(batch["source_label"])
  objective, sum_a, sum_d, grads_a, grads_d = _eq4_numpy(f, y, domains, params, lam)
  np.testing.assert_allclose(float(metrics["grl_lambda"]), lam, rtol=1e-6)
  np.testing.assert_allclose(float(value), (sum_a + sum_d) / n_source, rtol=1e-5)
  np.testing.assert_allclose(objective, sum_a - lam * sum_d)            # Eq. (4) itself
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # noqa: E731
  jax.tree.map(lambda a, b: close(a, b / n_source), grads["head"], grads_a["head"])      # Eq. 6
  jax.tree.map(lambda a, b: close(a, b / n_source), grads["domain_head"],
               grads_d["domain_head"])                                                   # Eq. 7
  close(df, (grads_a["f"] - lam * grads_d["f"]) / n_source)                              # Eq. 5


# ---------------------------------------------------------------- task
def test_train_batch_is_half_labelled_day_source_half_ir_target(task_and_batch):
  _, batch, _, _ = task_and_batch
  assert sorted(batch) == ["source_label", "source_video", "target_label", "target_video"]
  assert batch["source_video"].shape == (4, 16, 32, 32, 3)     # day stream: RGB
  assert batch["target_video"].shape == (4, 16, 32, 32, 1)     # ir stream: one channel
  assert batch["source_label"].shape == (4,) and batch["source_video"].dtype == np.uint8


def test_dark_target_reads_the_dark_video_stream(data_dir):
  task = dinet_trainer.Task(tiny_config(data_dir, target="dark"))
  batch = next(iter(task.train_dataset(8)))
  assert batch["target_video"].shape[-1] == 3
  assert batch["target_video"].mean() < 0.5 * batch["source_video"].mean()   # dark vs day


def test_target_labels_never_reach_the_loss(task_and_batch):
  task, batch, params, state = task_and_batch
  grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))
  rng, progress = jax.random.key(3), jnp.float32(0.4)
  reference = grad_fn(params, state, batch, rng, progress)
  relabelled = dict(batch, target_label=(batch["target_label"] + 1 + np.arange(4)) % 10)
  assert np.any(relabelled["target_label"] != batch["target_label"])
  jax.tree.map(np.testing.assert_array_equal, grad_fn(params, state, relabelled, rng, progress),
               reference)
  # ... while the source labels do matter (so the comparison above can fail).
  source_relabelled = dict(batch, source_label=(batch["source_label"] + 1) % 10)
  (loss, _), _ = grad_fn(params, state, source_relabelled, rng, progress)
  assert float(loss) != float(reference[0][0])


def _loss_grads(task, params, state, batch, progresses):
  """{progress: (gradients, metrics)} of one jitted loss_fn (progress is a traced argument)."""
  grad_fn = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))
  results = {}
  for p in progresses:
    (_, (_, metrics)), grads = grad_fn(params, state, batch, jax.random.key(5), jnp.float32(p))
    results[p] = (grads, metrics)
  return results


def test_lambda_schedule_reaches_the_model(task_and_batch):
  task, batch, params, state = task_and_batch
  grads = _loss_grads(task, params, state, batch, (0.0, 0.05, 0.3))
  np.testing.assert_allclose(float(grads[0.3][1]["grl_lambda"]), float(dann_lambda(0.3)),
                             rtol=1e-6)
  # Plain domain-loss gradient on the extractor: the same step with lambda forced to -1.
  plain_task = dinet_trainer.Task(task.config)
  plain_task.grl_lambda = lambda progress: jnp.float32(-1.0)
  plain = _loss_grads(plain_task, params, state, batch, (0.0,))[0.0][0]
  # g(p) = g_CE + (-lambda(p)) g_domain on the extractor, with g(0) = g_CE.
  domain_only = jax.tree.map(jnp.subtract, plain["extractor"], grads[0.0][0]["extractor"])
  for p in (0.05, 0.3):
    lam = float(dann_lambda(p))
    jax.tree.map(lambda got, ce, dom: np.testing.assert_allclose(got, ce - lam * dom, rtol=2e-3,
                                                                 atol=2e-6),
                 grads[p][0]["extractor"], grads[0.0][0]["extractor"], domain_only)
    # Domain and action heads see plain gradients, whatever lambda is.
    for head in ("domain_head", "head"):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                   grads[p][0][head], grads[0.0][0][head])
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(domain_only)) > 1e-4


def test_source_only_baseline_ignores_target_clips_and_lambda(data_dir, task_and_batch):
  _, batch, params, state = task_and_batch
  task = dinet_trainer.Task(tiny_config(data_dir, **{"dinet.domain_loss": False}))
  loss_fn = jax.jit(task.loss_fn)
  loss, (_, metrics) = loss_fn(params, state, batch, jax.random.key(5), jnp.float32(0.7))
  assert "domain_loss" not in metrics and float(metrics["grl_lambda"]) == 0.0
  scrambled = dict(batch, target_video=np.full_like(batch["target_video"], 255))
  loss_scrambled, _ = loss_fn(params, state, scrambled, jax.random.key(5), jnp.float32(0.1))
  assert float(loss) == float(loss_scrambled) == pytest.approx(float(metrics["ce_loss"]))


def test_match_channels():
  gray = jnp.arange(6.0).reshape(1, 2, 3, 1)
  np.testing.assert_array_equal(dinet_trainer.match_channels(gray, 3, "target"),
                                jnp.repeat(gray, 3, -1))
  rgb = jnp.ones((1, 2, 3, 3)) * jnp.array([0.0, 3.0, 6.0])
  np.testing.assert_allclose(dinet_trainer.match_channels(rgb, 1, "source"), 3.0)
  with pytest.raises(ValueError, match="input_channels=3.*target.*2 channels"):
    dinet_trainer.match_channels(jnp.ones((1, 2)), 3, "target")


def test_mismatched_source_and_target_classes_are_named(data_dir, tmp_path):
  clip = np.zeros((8, 32, 32, 3), np.uint8)
  other = str(tmp_path / "other")
  names = list(records.load_manifest(data_dir)["class_names"])
  names[0] = "cartwheel"
  examples = [dict(video=clip, label=0, video_id="a")]
  records.write_dataset(other, "other", names, {"train": examples, "test": examples}, fps=16)
  config = tiny_config(data_dir)
  config.dinet.target.data.update(name="other", dir=other)
  with pytest.raises(ValueError,
                     match=r"source only: \['move_left'\], target only: \['cartwheel'\]"):
    dinet_trainer.Task(config)


def test_odd_batch_is_rejected(data_dir):
  with pytest.raises(ValueError, match="batch_size.*must be even"):
    dinet_trainer.Task(tiny_config(data_dir)).train_dataset(7)


# ---------------------------------------------------------------- trainer: resume, end to end
def _losses(workdir: str) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in metrics_lib.read_metrics(workdir)
          if "train/loss" in r}


def test_exact_resume_of_zipped_source_target_pipelines(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=8, checkpoint_every=4, eval_every=0,
                       **{"input.prefetch": 2, "keep_checkpoints": 3})
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  one_device = jax.devices()[:1]
  train.Trainer(config, full, devices=one_device).run()
  # A run killed after step 4: only the step-4 checkpoint (state + both iterators) survives.
  shutil.copytree(os.path.join(full, "checkpoints", "4"), os.path.join(resumed, "checkpoints", "4"))
  train.Trainer(config, resumed, devices=one_device).run()
  want, got = _losses(full), _losses(resumed)
  assert sorted(want) == list(range(1, 9)) and sorted(got) == [5, 6, 7, 8]
  assert [got[s] for s in range(5, 9)] == [want[s] for s in range(5, 9)]   # exact
  assert want[5] != want[1]


def test_main_runlocal_end_to_end(data_dir, tmp_path, main_env):
  workdir = str(tmp_path / "run")
  result = subprocess.run(
      [sys.executable, "-m", "darkjax.main",
       f"--config=configs/dinet_synthetic.py:runlocal,steps=6,data_dir={data_dir}",
       f"--workdir={workdir}", "--config.progress_bar=False", "--config.log_every=1"],
      cwd=REPO, env=main_env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "eval/top1=" in result.stdout and "eval_source/top1=" in result.stdout
  rows = metrics_lib.read_metrics(workdir)
  lambdas = [r["train/grl_lambda"] for r in rows if "train/grl_lambda" in r]
  np.testing.assert_allclose(lambdas, [float(dann_lambda(s / 6)) for s in range(6)], rtol=1e-5)
  assert all(np.isfinite(r["train/domain_loss"]) for r in rows if "train/domain_loss" in r)
  for name in ("eval_confusion.png", "eval_source_confusion.png", "report.md"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["trainer"] == "dinet"


# ---------------------------------------------------------------- configs and the experiment table
@pytest.mark.parametrize("backbone", sorted(dinet_infar.BACKBONES))
def test_infar_config_backbones_and_missing_data_message(backbone, tmp_path, monkeypatch):
  monkeypatch.setenv("DARKJAX_DATA", str(tmp_path))
  config = dinet_infar.get_config(f"backbone={backbone}")
  assert config.model.kwargs.backbone == backbone and config.trainer == "dinet"
  assert config.input.data.dir == os.path.join(str(tmp_path), "xd145")
  assert config.required_weights.backbone.key == "model_init"
  assert config.required_weights.backbone.file == dinet_infar.BACKBONE_WEIGHTS[backbone]["file"]
  assert config.dinet.target.data.dir == os.path.join(str(tmp_path), "infar")
  # one dropout (p 0.5) before the action head: C3D's own after fc7, else the head's
  assert config.model.kwargs.head_dropout == (0.0 if backbone == "c3d" else 0.5)
  assert len(dinet_infar.INFAR_CLASSES) == 12
  assert "90.83" in dinet_infar.__doc__
  with pytest.raises(prepared.DatasetNotPreparedError, match="xd145"):
    dinet_trainer.Task(config)


def test_synthetic_config_rejects_unknown_target():
  with pytest.raises(ValueError, match="target='thermal'"):
    dinet_synthetic.get_config("target=thermal")


def test_report_keeps_each_evaluators_per_class_accuracy(tmp_path):
  """3D-DiNet evaluates the target (`eval`) and the source (`eval_source`) over the same class
  names: report.md gives each its own column (the source's once overwrote the target's)."""
  from darkjax import reports  # pylint: disable=import-outside-toplevel
  config = dinet_synthetic.get_config("runlocal")
  results = {"eval/top1": 0.9, "eval_per_class/fight": 0.95, "eval_per_class/jog": 0.85,
             "eval_source/top1": 0.3, "eval_source_per_class/fight": 0.25,
             "eval_source_per_class/jog": 0.35}
  text = open(reports.write_report(str(tmp_path), config, 10, 1.0, results),
              encoding="utf-8").read()
  assert "| class | eval accuracy | eval_source accuracy |" in text
  assert "| fight | 0.950 | 0.250 |" in text and "| jog | 0.850 | 0.350 |" in text
  # both datasets, each split and config field named: runs over splits read apart, and the
  # source (input.data) from the target
  from configs import dinet_infar  # pylint: disable=import-outside-toplevel
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  config = dinet_infar.get_config("init=none,split=3")
  text = open(reports.write_report(str(tmp_path), config, 10, 1.0, results),
              encoding="utf-8").read()
  blocks = {b.name: b.dir for b in config_lib.data_blocks(config)}
  assert (f"- datasets: `infar` split 3 as dinet.target.data ({blocks['infar']}); `xd145` "
          f"split 3 as input.data ({blocks['xd145']})") in text
  # one directory read as source and target, each evaluated on its own part: both said
  config = dinet_synthetic.get_config("runlocal")
  config.input.data.eval_split = "train"
  assert reports.evaluated_on(config) == "dinet.target.data: test, input.data: train"
  assert reports._datasets_line(config).endswith(   # pylint: disable=protected-access
      f"; `synthetic`, evaluated on train as input.data ({config.input.data.dir})")


def test_predict_accepts_the_config_that_trained_a_run_evaluated_on_another_target_part(tmp_path):
  """A 3D-DiNet run evaluated again on another part of its target (config.json then records it)
  still predicts with the config file that trained it: a part evaluated predicts nothing."""
  from darkjax import config as config_lib  # pylint: disable=import-outside-toplevel
  from darkjax.tools import predict_checkpoint  # pylint: disable=import-outside-toplevel
  spec = "configs/dinet_synthetic.py:runlocal"
  evaluated = config_lib.load(spec)
  evaluated.dinet.target.data.eval_split = "train"
  (tmp_path / "config.json").write_text(json.dumps(config_lib.json_values(evaluated)))
  predict_checkpoint.check_same_run(config_lib.load(spec), str(tmp_path), spec)
  other = config_lib.load(spec)
  other.dinet.target.stream = "night"
  with pytest.raises(predict_checkpoint.PredictError, match="dinet.target.stream"):
    predict_checkpoint.check_same_run(other, str(tmp_path), spec)
