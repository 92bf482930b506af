"""Zero-shot classification (the CLIP protocol) and the linear probe.

Zero-shot: every class name is put into every prompt template ("a photo of
a {}."), the text embeddings of one class are averaged and re-normalised,
and an image is assigned the class whose embedding is most similar.

Linear probe (the CLIP paper's protocol): frozen image features, multinomial
logistic regression with an L2 penalty, fitted by L-BFGS. The penalty is
chosen on a validation split from a log-spaced sweep; the model is then
refitted on train + validation and scored on the test split.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alip_jax import progress

# The L2 sweep: 10^-6 … 10^2 (the CLIP paper sweeps 10^-6 … 10^6 more finely).
L2_SWEEP = tuple(10.0 ** e for e in range(-6, 3))


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def class_embeddings(encode_text, classnames: list[str], templates: list[str]) -> np.ndarray:
  """[C, D]: per class, the mean of its normalised prompt embeddings, normalised.
  `encode_text`: list of str → L2-normalised [N, D]."""
  prompts = [t.format(name) for name in classnames for t in templates]
  emb = _normalize(np.asarray(encode_text(prompts), np.float32))
  return _normalize(emb.reshape(len(classnames), len(templates), -1).mean(axis=1))


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """top-1, top-5 (top-k with k ≤ classes) and mean per-class top-1 accuracy of
  `scores` [N, C]. A class with no test image is left out of the mean."""
  labels = np.asarray(labels)
  # Rank of the true class: classes scoring strictly higher (ties go our way).
  true_score = scores[np.arange(len(labels)), labels]
  rank = (scores > true_score[:, None]).sum(axis=1)
  top1 = rank < 1
  present = [c for c in range(num_classes) if np.any(labels == c)]
  return {"top1": float(top1.mean()), f"top{min(5, num_classes)}": float((rank < 5).mean()),
          "mean_per_class": float(np.mean([top1[labels == c].mean() for c in present])),
          "num_images": int(len(labels))}


def zeroshot_metrics(image_emb: np.ndarray, labels: np.ndarray, class_emb: np.ndarray) -> dict:
  return accuracy_metrics(image_emb @ class_emb.T, labels, len(class_emb))


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def fit_logistic(features, labels, l2, num_classes: int, steps: int = 300):
  """Minimises mean cross-entropy + l2/2 · ‖W‖² (bias not penalised) with
  L-BFGS; returns (W [D, C], b [C])."""
  features = jnp.asarray(features, jnp.float32)
  params = (jnp.zeros((features.shape[1], num_classes)), jnp.zeros((num_classes,)))

  def loss_fn(p):
    logits = features @ p[0] + p[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return ce + 0.5 * l2 * jnp.sum(p[0] ** 2)

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss_fn)

  def step(carry, _):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=loss_fn)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, length=steps)
  return params


def predict(params, features) -> np.ndarray:
  return np.asarray(jnp.asarray(features, jnp.float32) @ params[0] + params[1])


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, num_classes: int,
                 l2_sweep=L2_SWEEP, steps: int = 300) -> dict:
  """Chooses the L2 penalty on (val_x, val_y), refits on train + val, and
  reports the test accuracy (and each penalty's validation accuracy)."""
  val_accuracy = {}
  for l2 in progress.bar(l2_sweep, desc="linear probe L2 sweep", unit="fit"):
    params = fit_logistic(train_x, train_y, l2, num_classes, steps)
    val_accuracy[l2] = float((predict(params, val_x).argmax(-1) == val_y).mean())
  best = max(val_accuracy, key=lambda l2: (val_accuracy[l2], l2))  # ties: the stronger penalty
  params = fit_logistic(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]),
                        best, num_classes, steps)
  metrics = accuracy_metrics(predict(params, test_x), test_y, num_classes)
  return {"accuracy": metrics["top1"], "mean_per_class": metrics["mean_per_class"],
          "l2": best, "val_accuracy": val_accuracy[best], "num_train": int(len(train_x)),
          "num_val": int(len(val_x)), "num_test": int(len(test_x))}
