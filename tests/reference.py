"""NumPy references written from docs/METHOD.md (not from our JAX code), used
by the loss tests."""

import numpy as np


def logsumexp(a, axis):
  m = a.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def infonce_terms(x, y, logit_scale):
  """2·nce_i of docs/METHOD.md (Notation): ce_i2t[i] + ce_t2i[i] for logits = s·x yᵀ."""
  logits = np.exp(logit_scale) * x @ y.T
  diag = np.diag(logits)
  return (logsumexp(logits, 1) - diag) + (logsumexp(logits, 0) - diag)


def alip_official(x, t, c, logit_scale, h, momentum=0.99, update_first=True,
                  normalization="mean_half", gates=(True, True, True),
                  gamma_sample=2.0, gamma_pair=2.0):
  """One step of the official procedure; returns (loss, new_h, weights)."""
  x, t, c = (np.asarray(v, np.float64) for v in (x, t, c))
  s_tc = (t * c).sum(1)
  s_xt = (t * x).sum(1)
  s_xc = (c * x).sum(1)
  new_h = {"h_tc": momentum * h["h_tc"] + (1 - momentum) * s_tc.mean(),
           "h_xt": momentum * h["h_xt"] + (1 - momentum) * s_xt.mean(),
           "h_xc": momentum * h["h_xc"] + (1 - momentum) * s_xc.mean()}
  used = new_h if update_first else h
  # γ = 2 exactly as the official train.py writes it: exp(·)**2.
  gate = lambda d, gamma: np.exp(d) ** 2 if gamma == 2 else np.exp(gamma * d)
  ws_raw = gate(s_tc - used["h_tc"], gamma_sample)
  wt = np.where(ws_raw < 1, gate(s_xt - used["h_xt"], gamma_pair), 1.0)
  wc = np.where(ws_raw < 1, gate(s_xc - used["h_xc"], gamma_pair), 1.0)
  ws = np.where(ws_raw < 1, ws_raw, 1.0)
  ones = np.ones_like(ws)
  ws, wt, wc = (w if on else ones for w, on in zip((ws, wt, wc), gates))
  terms_raw = ws * wt * infonce_terms(x, t, logit_scale)
  terms_cap = ws * wc * infonce_terms(x, c, logit_scale)
  if normalization == "mean_half":
    loss = (terms_raw / 2).mean() + (terms_cap / 2).mean()
  else:  # the paper's Eq. 5–6: −Σ_i over the batch, no ½
    loss = terms_raw.sum() + terms_cap.sum()
  return loss, new_h, {"sample": ws, "raw_pair": wt, "caption_pair": wc}


# ---- Per-loss references with analytic gradients. Each returns the loss and
# G = ∂L/∂z for the logit matrix z = s·x yᵀ (+ b); `chain` turns G into
# gradients of x, y, log s (and b).

def softmax(z, axis):
  e = np.exp(z - z.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def chain(g, x, y, log_scale):
  s = np.exp(log_scale)
  return {"x": s * g @ y, "y": s * g.T @ x, "log_scale": np.sum(g * s * (x @ y.T)),
          "bias": np.sum(g)}


def infonce(x, y, log_scale, weights=None):
  """mean_i w_i (CE_i2t + CE_t2i)/2 and its G (w constant)."""
  n = len(x)
  w = np.ones(n) if weights is None else weights
  z = np.exp(log_scale) * x @ y.T
  loss = (w * infonce_terms(x, y, log_scale) / 2).mean()
  g = (w[:, None] * softmax(z, 1) + softmax(z, 0) * w[None, :] - 2 * np.diag(w)) / (2 * n)
  return loss, g


def siglip(x, y, log_scale, bias):
  n = len(x)
  z = np.exp(log_scale) * x @ y.T + bias
  labels = 2 * np.eye(n) - 1
  loss = np.sum(np.logaddexp(0, -labels * z)) / n      # −log σ(l·z) = softplus(−l·z)
  g = -labels / (1 + np.exp(labels * z)) / n           # ∂/∂z softplus(−l·z)
  return loss, g


def softclip(x, y, log_scale, tau_s=0.1, alpha=0.2, beta=1.0, source="own_modality",
             targets_from=None):
  """The reconstruction of docs/METHOD.md: ½ mean KL(Y‖P) both ways + β·½ mean KL(Ȳ‖P̄).
  The targets are stop-gradient: `targets_from=(x0, y0)` builds them from
  fixed embeddings (for finite differences); by default from x, y."""
  n = len(x)
  eye = np.eye(n, dtype=bool)
  z = np.exp(log_scale) * x @ y.T
  x_t, y_t = targets_from if targets_from is not None else (x, y)
  q_x = softmax(x_t @ x_t.T / tau_s, 1)
  q_y = softmax(y_t @ y_t.T / tau_s, 1)
  prior = {"own_modality": (q_x, q_y), "other_modality": (q_y, q_x),
           "mean": ((q_x + q_y) / 2, (q_x + q_y) / 2)}[source]
  loss, grads = 0.0, []
  for logits, q in ((z, prior[0]), (z.T, prior[1])):
    p = softmax(logits, 1)
    target = (1 - alpha) * np.eye(n) + alpha * q
    kl_soft = np.sum(target * (np.log(target) - np.log(p)), 1)
    p_neg = np.where(eye, 0, np.exp(logits - logits.max(1, keepdims=True)))
    p_neg /= p_neg.sum(1, keepdims=True)
    q_neg = np.where(eye, 0, q) / (1 - np.diag(q))[:, None]
    kl_neg = np.sum(np.where(eye, 0, q_neg * (np.log(np.where(eye, 1, q_neg)) -
                                             np.log(np.where(eye, 1, p_neg)))), 1)
    loss += (kl_soft.mean() + beta * kl_neg.mean()) / 2
    grads.append(((p - target) + beta * (p_neg - q_neg)) / (2 * n))
  return loss, grads[0] + grads[1].T


def finite_difference(fn, arrays, name, eps=1e-6):
  """Central differences of scalar fn(**arrays) w.r.t. arrays[name] (float64)."""
  value = np.array(arrays[name], np.float64)
  grad = np.zeros_like(value)
  for idx in np.ndindex(value.shape):
    for sign in (1, -1):
      shifted = value.copy()
      shifted[idx] += sign * eps
      grad[idx] += sign * fn(**{**arrays, name: shifted}) / (2 * eps)
  return grad


def mpnce(views, texts, log_scales, offsets):
  """MP-NCE written as loops from the formula: for every anchor a and every
  positive p (same sample, p ≠ a), −log(e^{z_ap} / (e^{z_ap} + Σ_{n∈𝒩(a)} e^{z_an})),
  averaged over all (a, p); z_ab = e^{log_scale_d}·(cos − offset_d), d = II/IT/TT."""
  emb = np.concatenate(list(views) + list(texts)).astype(np.float64)
  n = len(views[0])
  ids = np.tile(np.arange(n), len(views) + len(texts))
  domain = np.repeat([0] * len(views) + [1] * len(texts), n)

  def z(a, b):
    d = domain[a] + domain[b]
    return np.exp(log_scales[d]) * (emb[a] @ emb[b] - offsets[d])

  total, count = 0.0, 0
  for a in range(len(emb)):
    negatives = [z(a, b) for b in range(len(emb)) if ids[b] != ids[a]]
    for p in range(len(emb)):
      if p != a and ids[p] == ids[a]:
        zp = z(a, p)
        total += -(zp - np.log(np.exp(zp) + np.sum(np.exp(negatives))))
        count += 1
  return total / count
