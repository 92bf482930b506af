"""Every measured figure in docs/BENCHMARKS.md and docs/RESULTS.md has its
command, or says where it is quoted from.

The rule, line by line (outside fenced code blocks, which are the commands):
* A *figure-bearing line* is a prose or table line holding a measured
  number: a number followed by a unit of time, memory, rate or ratio
  (s, ms, µs, min, h, KiB/MiB/GiB/TiB, KB/MB/GB, %, ×, '/s'), or a table
  row (starting with '|') holding a decimal number such as 0.43.
* Its *section* runs from the nearest '##' (or '#') heading above it to the
  next one; '###' subsections belong to the '##' section they sit in.
* The line passes when a fenced code block (``` … ```) stands above it in
  its section — the command that produces it, so a section that starts with
  its command block covers all its figures — or when its block (its list
  item, paragraph or table) says 'quoted from SOURCE', SOURCE being a link,
  a commit hash or a repository path that says where the figure comes from.
What it cannot see: whether the command above really produces the figure.
A one-off measurement written after a section's command (a profile, a timing
by hand) must still say 'quoted from' itself.
"""

import os
import re

import pytest

from conftest import ROOT

DOCS = ("docs/BENCHMARKS.md", "docs/RESULTS.md")
UNIT = r"(?:s|ms|µs|us|min|h|KiB|MiB|GiB|TiB|KB|MB|GB|%|×|x|/s|[a-z]+/s)"
FIGURE = re.compile(rf"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?{UNIT}(?![\w])")
TABLE_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
QUOTED = re.compile(r"quoted from (?:\[[^\]]+\]\([^)]+\)|[^()]*?\b[0-9a-f]{7,40}\b|[^()\s]*\w/[\w./-]+)",
                    re.IGNORECASE)


def is_figure_line(line: str) -> bool:
  if line.startswith("|"):
    return not set(line) <= set("|-: ") and bool(TABLE_DECIMAL.search(line))
  return bool(FIGURE.search(line))


def blocks(lines):
  """Index of each line's block: list items, paragraphs and tables are
  blocks; blank lines and headings separate them."""
  block, out, previous = 0, [], ""
  for line in lines:
    item = re.match(r"\s*([*-]|\d+\.) ", line) and not previous.startswith("|")
    if not line.strip() or line.startswith("#") or item or (line.startswith("|") !=
                                                              previous.startswith("|")):
      block += 1
    out.append(block)
    previous = line
  return out


def uncovered_figures(text: str) -> list[tuple[int, str]]:
  """(line number, line) of every figure-bearing line without its command
  above it in its section and without 'quoted from SOURCE' in its block."""
  lines, prose = text.splitlines(), []
  fenced, command_seen = False, False
  for number, line in enumerate(lines, 1):
    if line.lstrip().startswith("```"):
      fenced = not fenced
      command_seen = True
      prose.append("")
      continue
    if fenced:
      prose.append("")
      continue
    if re.match(r"#{1,2} ", line):
      command_seen = False
    prose.append(line)
    lines[number - 1] = (line, command_seen)
  block_of = blocks(prose)
  quoted = {block_of[i] for i, line in enumerate(prose) if QUOTED.search(line)}
  out = []
  for i, entry in enumerate(lines):
    if isinstance(entry, tuple):
      line, covered = entry
      if (is_figure_line(line) and not line.startswith("#") and not covered
          and block_of[i] not in quoted):
        out.append((i + 1, line))
  return out


@pytest.mark.parametrize("path", DOCS)
def test_every_figure_has_its_command_or_its_source(path):
  with open(os.path.join(ROOT, path)) as f:
    missing = uncovered_figures(f.read())
  assert not missing, (
      f"{path}: figures with no command block above them in their section and no "
      f"'quoted from SOURCE' in their paragraph (put the command that produces them in a "
      f"``` block above, or say where they are quoted from):\n"
      + "\n".join(f"  line {n}: {line.strip()[:100]}" for n, line in missing))


def test_the_rule_catches_an_unmarked_figure_and_accepts_the_two_ways_out():
  doc = ("## A\n\nIntro, 3 seeds.\n\nThe step takes 1.25 s here.\n\n"
         "```\npython -m alip_jax.benchmarks.train_step\n```\n\nNow 0.98 s.\n\n"
         "### Sub\n\n| a | b |\n|---|---|\n| x | 0.43 |\n\n"
         "## B\n\nIt ran at 512 records/s (quoted from docs/DATA.md).\n\nAnd 40 GiB.\n")
  assert [n for n, _ in uncovered_figures(doc)] == [5, 23]
  assert uncovered_figures("## C\n\n* a bullet, 12 %\n  quoted from 1e78575\n* next 3 ms\n") == [
      (5, "* next 3 ms")]
  assert uncovered_figures("## D\n\nbatch 4096, lr 1e-3, 224 px, B/16, 2026-11-24, v0.12\n") == []
