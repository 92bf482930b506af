"""The embedded corpus's scenes and the texts that describe them.

A scene is one to three objects (shape, colour, size, row, column). Its
texts, each in its own style: the captioner's (`caption_for`: every
attribute, or with `specificity` < 1 a generic captioner's), web alt-text
(`alt_text`, terse, title case now and then; with `detail` also size and
place words), partial alt-text (`partial_text`: part of the content plus
shop junk), and the test queries (`queries_for`), one of which,
`human_query`, uses a template family that neither training text uses.
Rendering, splits and shards are in tools/synthetic.py.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220),
    "yellow": (235, 215, 40), "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
NOISE_KINDS = ("matched", "partial", "mismatched")
_JUNK = ("buy now", "free shipping", "best price", "sale 50% off",
         "new arrival", "high quality", "click here", "download",
         "wallpaper hd", "stock photo", "royalty free", "limited offer")
_ALT_TEMPLATES = ("{}", "photo of {}", "{} | free download", "{} wallpaper",
                  "{} - stock image", "my {}", "{} picture")


def random_scene(rng: np.random.Generator) -> list[dict]:
  """Random objects: distinct columns, random row, shape, colour, size."""
  n = int(rng.integers(1, 4))
  columns = rng.permutation(3)[:n]
  return [dict(shape=str(rng.choice(SHAPES)), color=str(rng.choice(COLOR_NAMES)),
               size=str(rng.choice(SIZES)), row=str(rng.choice(ROWS)),
               column=int(col)) for col in columns]


def _describe(obj: dict) -> str:
  where = {"top": "at the top", "middle": "in the middle",
           "bottom": "at the bottom"}[obj["row"]]
  return f"a {obj['size']} {obj['color']} {obj['shape']} {where}"


def _join(parts: list[str]) -> str:
  return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_id(objects: list[dict]) -> str:
  """Canonical description: scenes with equal ids have equal captions."""
  return "; ".join(sorted(_describe(o) for o in objects))


def _describe_generic(obj: dict, rng: np.random.Generator, specificity: float) -> str:
  """The captioner's template with each attribute named with prob.
  `specificity` (a generic captioner: "a red object", "a shape at the top")."""
  named = [bool(v) for v in rng.random(4) < specificity]
  words = ["a"] + [obj["size"]] * named[0] + [obj["color"]] * named[1]
  words.append(obj["shape"] if named[2] else "object")
  if named[3]:
    words.append({"top": "at the top", "middle": "in the middle", "bottom": "at the bottom"}[obj["row"]])
  return " ".join(words)


def caption_for(objects: list[dict], rng: np.random.Generator,
                error_rate: float = 0.0, specificity: float = 1.0,
                hallucination_rate: float = 0.0) -> str:
  """A faithful description; with prob. `error_rate` one attribute is wrong,
  with prob. `hallucination_rate` an object that is not there is added, and
  each attribute is named with prob. `specificity`."""
  objects = [dict(o) for o in objects]
  if error_rate and rng.random() < error_rate:
    obj = objects[int(rng.integers(len(objects)))]
    attribute = str(rng.choice(["shape", "color", "size", "row"]))
    choices = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZES, "row": ROWS}[attribute]
    obj[attribute] = str(rng.choice([c for c in choices if c != obj[attribute]]))
  if hallucination_rate and rng.random() < hallucination_rate:
    objects.append(random_scene(rng)[0])
  order = rng.permutation(len(objects))
  if specificity >= 1:
    return _join([_describe(objects[i]) for i in order])
  return _join([_describe_generic(objects[i], rng, specificity) for i in order])


_WEB_SIZE = {"small": "tiny", "large": "big"}
_WEB_PLACE = {"top": "upper", "middle": "center", "bottom": "lower"}


def alt_text(objects: list[dict], rng: np.random.Generator, detail: float = 0.0) -> str:
  """Web-style alt-text naming every object (colour + shape, maybe size);
  with prob. `detail` per object also its size and place in web words
  ("big red circle upper"), which the captioner may not name."""
  names = []
  for i in rng.permutation(len(objects)):
    obj = objects[i]
    words = [obj["color"], obj["shape"]]
    if detail and rng.random() < detail:
      words = [_WEB_SIZE[obj["size"]]] + words + [_WEB_PLACE[obj["row"]]]
    elif rng.random() < 0.3:
      words.insert(0, _WEB_SIZE[obj["size"]])
    names.append(" ".join(words))
  text = str(rng.choice(_ALT_TEMPLATES)).format(" and ".join(names))
  return text.title() if rng.random() < 0.2 else text


_HUMAN_PLACE = {"top": "near the upper edge", "middle": "right in the centre",
                "bottom": "down near the lower edge"}
_HUMAN_SIZE = {"small": "little", "large": "big"}
_HUMAN_TEMPLATES = ("there is a {size} {color} {shape} {place}",
                    "i can see a {shape} coloured {color}, {size}, {place}",
                    "one {color} {shape} sitting {place}, fairly {size}")


def human_query(objects: list[dict], rng: np.random.Generator) -> str:
  """A complete description in a template family that neither training
  text uses (other syntax, place and size words), as people write queries."""
  parts = [str(rng.choice(_HUMAN_TEMPLATES)).format(
      size=_HUMAN_SIZE[o["size"]], color=o["color"], shape=o["shape"], place=_HUMAN_PLACE[o["row"]])
      for o in (objects[i] for i in rng.permutation(len(objects)))]
  count = {1: "one thing", 2: "two things", 3: "three things"}[len(objects)]
  return f"{count} in this picture: " + "; also ".join(parts)


def queries_for(objects: list[dict], styles, rng: np.random.Generator) -> dict:
  """A complete, correct test query per style (see CorpusConfig.query_styles)."""
  makers = {"caption": lambda: caption_for(objects, rng),
            "alt": lambda: alt_text(objects, rng, detail=1.0),
            "human": lambda: human_query(objects, rng)}
  unknown = set(styles) - set(makers)
  if unknown:
    raise ValueError(f"query_styles {sorted(unknown)}: the styles are {sorted(makers)}")
  return {style: makers[style]() for style in styles}


def partial_text(objects: list[dict], rng: np.random.Generator) -> str:
  """Part of the content (one object, or one attribute of it) plus junk."""
  obj = objects[int(rng.integers(len(objects)))]
  part = str(rng.choice([f"{obj['color']} {obj['shape']}", obj["color"], obj["shape"]]))
  if len(objects) == 1 and part == f"{obj['color']} {obj['shape']}":
    part = obj["shape"]  # a single object named in full would be "matched"
  filename = str(rng.choice(["IMG_{:04d}.jpg", "DSC{:05d}", "photo_{:03d}.png"])).format(
      int(rng.integers(0, 10_000)))
  junk = list(rng.choice(_JUNK, size=int(rng.integers(1, 3)), replace=False))
  words = [filename, part] + junk
  order = rng.permutation(len(words))
  return " ".join(words[i] for i in order)


