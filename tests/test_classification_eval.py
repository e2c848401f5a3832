"""The classification evaluation scores an example's eval views one view at a time: the same
probabilities as scoring them all at once, in the memory of one view's forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darkjax.evaluators.classification import view_probabilities


def _predict(weights):
  def predict(view):   # {name: (B, T, D)} -> (B, classes), through (B, T, 512) intermediates
    hidden = jnp.tanh(jnp.einsum("btd,dh->bth", view["video"], weights[0]))
    hidden = jnp.sort(hidden, axis=1)   # a buffer XLA holds in memory, as a network's activations
    hidden = jnp.tanh(jnp.einsum("bth,hk->btk", hidden, weights[1]))
    return jnp.mean(hidden, axis=1) @ weights[2] + jnp.mean(view["flow"], axis=(1, 2))[:, None]
  return predict


def _all_at_once(predict, fields):
  """The formulation before: every view of every example through the model in one batch."""
  b, v = fields["video"].shape[:2]
  flat = {k: x.reshape((b * v,) + x.shape[2:]) for k, x in fields.items()}
  scores = predict(flat).astype(jnp.float32).reshape(b, v, -1)
  return jnp.mean(jax.nn.softmax(scores, axis=-1), axis=1)


def test_one_view_at_a_time_gives_the_probabilities_of_all_at_once():
  keys = jax.random.split(jax.random.key(0), 5)
  weights = (jax.random.normal(keys[0], (8, 512)) / 3, jax.random.normal(keys[4], (512, 512)) / 20,
             jax.random.normal(keys[1], (512, 5)))
  predict = _predict(weights)
  for views in (1, 3):
    fields = {"video": jax.random.normal(keys[2], (4, views, 6, 8)),
              "flow": jax.random.normal(keys[3], (4, views, 6, 2))}
    got = jax.jit(lambda f: view_probabilities(predict, f))(fields)
    want = _all_at_once(predict, fields)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, rtol=1e-5)


def test_the_memory_of_one_view_not_of_all():
  weights = (jax.ShapeDtypeStruct((8, 512), jnp.float32),
             jax.ShapeDtypeStruct((512, 512), jnp.float32),
             jax.ShapeDtypeStruct((512, 5), jnp.float32))
  fields = {"video": jax.ShapeDtypeStruct((16, 12, 64, 8), jnp.float32),
            "flow": jax.ShapeDtypeStruct((16, 12, 64, 2), jnp.float32)}

  def temp(fn):
    compiled = jax.jit(lambda w, f: fn(_predict(w), f)).lower(weights, fields).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  one, every = temp(view_probabilities), temp(_all_at_once)
  hidden = 16 * 64 * 512 * 4   # one view's (B, T, 512) intermediate
  assert every >= 12 * hidden > 4 * hidden >= one, (one, every)


def test_metrics_against_numpy_and_an_example_scored_nan_is_wrong(caplog):
  from darkjax.evaluators import classification  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  scores = rng.random((12, 6)).astype(np.float32)
  labels = rng.integers(0, 5, 12)   # class 5 never occurs: its accuracy is NaN, left out
  store = {i: (scores[i], int(labels[i])) for i in range(12)}
  result = classification.metrics(store, 6, expected_examples=12)
  ranked = np.argsort(-scores, axis=1)
  assert result["top1"] == np.mean(ranked[:, 0] == labels)
  assert result["top5"] == np.mean([labels[i] in ranked[i, :5] for i in range(12)])
  per_class = [np.mean(ranked[labels == c, 0] == c) for c in range(5)]
  np.testing.assert_allclose(result["per_class"][:5], per_class)
  assert np.isnan(result["per_class"][5]) and result["mean_class_acc"] == np.mean(per_class)
  # A NaN row once ranked its class by where NaNs sort (class 0 for every such row).
  store[0] = (np.full(6, np.nan, np.float32), 0)
  store[1] = (np.array([np.inf, 0, 0, 0, 0, 0], np.float32), 0)
  nan_result = classification.metrics(store, 6)
  correct = (ranked[:, 0] == labels)
  correct[:2] = False
  assert nan_result["top1"] == np.mean(correct)
  assert nan_result["confusion"].sum() == 10
  assert "2 of 12 examples scored NaN or inf" in caplog.text


def test_confusion_figure_rows_are_shares_of_every_example_of_the_class():
  """Examples scored NaN are out of the matrix (they were predicted no class) but count in their
  class's row total, as in its per-class accuracy: a class with 1 right of 3 (2 NaN) is drawn
  at 1/3, not as a perfect diagonal."""
  from darkjax import plots  # pylint: disable=import-outside-toplevel
  matrix = np.array([[1, 0], [1, 3]])
  drawn = lambda **kw: plots.confusion(matrix, ["a", "b"], **kw).axes[0].images[0].get_array()  # noqa: E731
  np.testing.assert_allclose(drawn(support=np.array([3, 4])), [[1 / 3, 0], [0.25, 0.75]])
  np.testing.assert_allclose(drawn(), [[1, 0], [0.25, 0.75]])


def test_code_matrix_colours_are_centred_between_the_targets():
  """The two-stream code figure: 0.5 (halfway between a p-hot code's 0 and 1) is the diverging
  colour map's centre, the range holds 0 and 1 at least (autoscaling put white at the middle of
  whatever range the codes had)."""
  from darkjax import plots  # pylint: disable=import-outside-toplevel
  for codes, (low, high) in ((np.eye(3) * 0.5 + 0.2, (0.0, 1.0)),
                             (np.eye(3) * 3.0 - 0.5, (-0.5, 2.5))):
    norm = plots.code_matrix({"ir": codes}, ["a", "b", "c"]).axes[0].images[0].norm
    assert (norm.vmin, norm.vcenter, norm.vmax) == pytest.approx((low, 0.5, high))
