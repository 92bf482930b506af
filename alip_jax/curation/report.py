"""What the gates say about a split, for people: PNG plots and an HTML page.

  hist_s_tc.png       histogram of S_tc (raw text vs caption), per noise kind
  hist_w_sample.png   histogram of the sample weight W^s, per noise kind
  scatter.png         W^s against the CLIP score (image–raw-text cosine)
  index.html          counts, the plots, and the N most down-weighted and N
                      most trusted samples: thumbnail, raw text, caption,
                      weights (images embedded as data URIs: one file to share)

Noise kinds come from `meta.noise_kind` (the embedded corpus has them; web
data usually does not, then there is one group, "all").
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np
from PIL import Image

from alip_jax import extras
from alip_jax.data import pipeline, records

THUMBNAIL = 96


def _groups(kinds: np.ndarray) -> list[tuple[str, np.ndarray]]:
  names = sorted(set(kinds.tolist()) - {""})
  if not names:
    return [("all", np.ones(len(kinds), bool))]
  return [(name, kinds == name) for name in names]


def _histogram(values, kinds, title, xlabel, path, bins=40, log=False):
  matplotlib = extras.require("matplotlib", "alip-score --report (plots)")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
  edges = np.linspace(float(values.min()), float(values.max()) + 1e-6, bins + 1)
  for name, mask in _groups(kinds):
    ax.hist(values[mask], bins=edges, alpha=0.55, label=f"{name} ({mask.sum()})")
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("records (log scale)" if log else "records")
  if log:  # W^s piles up at 1 (every record at or above the mean)
    ax.set_yscale("log")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _scatter(x, y, kinds, path):
  matplotlib = extras.require("matplotlib", "alip-score --report (plots)")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
  for name, mask in _groups(kinds):
    ax.scatter(x[mask], y[mask], s=4, alpha=0.4, label=name)
  ax.set_xlabel("CLIP score (image · raw text)")
  ax.set_ylabel("sample weight W^s (Language Consistency Gate)")
  ax.set_title("LCG weight against CLIP score")
  ax.legend(markerscale=3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _data_uri(png_bytes: bytes, mime="image/png") -> str:
  return f"data:{mime};base64,{base64.b64encode(png_bytes).decode('ascii')}"


def _thumbnail(image: Image.Image) -> str:
  image = image.copy()
  image.thumbnail((THUMBNAIL, THUMBNAIL))
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  return _data_uri(buf.getvalue())


def _rows(table, order, source) -> str:
  out = []
  for i in order:
    rec = pipeline.decode_record(source[int(table["index"][i])])
    if "error" in rec:  # cannot happen for a scored record unless the data changed
      continue
    if rec["key"] != table["key"][i]:
      raise ValueError(f"record {table['index'][i]} has key {rec['key']!r}, the scores "
                       f"{table['key'][i]!r}: these scores belong to another split")
    cells = [f'<img src="{_thumbnail(rec["image"])}" alt="{html.escape(rec["key"])}">',
             html.escape(rec["key"]), html.escape(table["noise_kind"][i] or "—"),
             html.escape(rec["raw_text"]), html.escape(rec["caption"]),
             *(f"{table[c][i]:.3f}" for c in ("w_sample", "w_raw_pair", "w_caption_pair",
                                               "s_tc", "clip_score"))]
    out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
  return "\n".join(out)


_HEADER = ("<tr><th>image</th><th>key</th><th>noise kind</th><th>raw text</th><th>caption</th>"
           "<th>W<sup>s</sup></th><th>W<sup>t</sup></th><th>W<sup>c</sup></th><th>S<sub>tc</sub></th>"
           "<th>CLIP score</th></tr>")


def write_report(table: dict, files: list[str], out: str, n: int = 24,
                 summary: dict | None = None) -> list[str]:
  """Writes the plots and index.html into `out`; returns the file paths.
  `table`: `alip_jax.score.read_scores` output; `files`: the scored split."""
  os.makedirs(out, exist_ok=True)
  kinds = table["noise_kind"]
  plots = {"hist_s_tc.png": "S_tc: raw text vs synthetic caption",
           "hist_w_sample.png": "W^s: the Language Consistency Gate's sample weight",
           "scatter.png": "W^s against the CLIP score"}
  _histogram(table["s_tc"], kinds, plots["hist_s_tc.png"], "cosine t·c",
             os.path.join(out, "hist_s_tc.png"))
  _histogram(table["w_sample"], kinds, plots["hist_w_sample.png"], "W^s",
             os.path.join(out, "hist_w_sample.png"), log=True)
  _scatter(table["clip_score"], table["w_sample"], kinds, os.path.join(out, "scatter.png"))

  # Down-weighted: smallest W^s (ties by S_tc); trusted: largest S_tc.
  lowest = np.lexsort((table["s_tc"], table["w_sample"]))[:n]
  highest = np.argsort(-table["s_tc"], kind="stable")[:n]
  source = records.ShardedSource(files)
  counts = "".join(
      f"<tr><td>{html.escape(name)}</td><td>{mask.sum()}</td>"
      f"<td>{table['w_sample'][mask].mean():.3f}</td>"
      f"<td>{(table['w_sample'][mask] < 0.5).mean():.1%}</td></tr>"
      for name, mask in _groups(kinds))
  images = "".join(
      f'<figure><img src="{_data_uri(open(os.path.join(out, name), "rb").read())}" '
      f'alt="{html.escape(title)}"><figcaption>{html.escape(title)}</figcaption></figure>'
      for name, title in plots.items())
  summary = summary or {}
  facts = {"records": summary.get("records"), "bad records (by reason)": summary.get("bad"),
           "means H_tc, H_xt, H_xc": ", ".join(f"{summary['means'][k]:.4f}" for k in ("h_tc", "h_xt", "h_xc"))
           if "means" in summary else None,
           "means from": summary.get("means_source"),
           "γ_s, γ_p": f"{summary.get('gamma_sample')}, {summary.get('gamma_pair')}",
           "model step": summary.get("step")}
  meta = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                 for k, v in facts.items() if summary)
  page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ALIP gate report</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}}
figure{{display:inline-block;margin:0 1em 1em 0}} figure img{{max-width:480px}}</style>
</head><body>
<h1>What ALIP's gates say about this split</h1>
<p>{len(table['key'])} scored records.</p>
<table>{meta}</table>
<h2>Per noise kind</h2>
<table><tr><th>noise kind</th><th>records</th><th>mean W<sup>s</sup></th>
<th>W<sup>s</sup> &lt; 0.5</th></tr>{counts}</table>
<h2>Plots</h2>{images}
<h2>The {len(lowest)} most down-weighted samples</h2>
<table>{_HEADER}
{_rows(table, lowest, source)}
</table>
<h2>The {len(highest)} most trusted samples (highest S<sub>tc</sub>)</h2>
<table>{_HEADER}
{_rows(table, highest, source)}
</table>
</body></html>
"""
  with open(os.path.join(out, "index.html"), "w", encoding="utf-8") as f:
    f.write(page)
  return [os.path.join(out, name) for name in (*plots, "index.html")]
