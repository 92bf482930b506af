"""NumPy references written from shared/specs/method-specs.md §1.4 (not from
our JAX code), used by the loss tests."""

import numpy as np


def logsumexp(a, axis):
  m = a.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def infonce_terms(x, y, logit_scale):
  """Step 7: ce_i2t[i] + ce_t2i[i] for logits = s·x yᵀ."""
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
