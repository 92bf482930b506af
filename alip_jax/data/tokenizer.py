"""SentencePiece tokenizer with CLIP-style fixed-length encoding.

Encoding of one text, context length L:
  [SOT, piece_1, ..., piece_k, EOT, PAD, ..., PAD]          (k <= L - 2)
Over-long texts are truncated to L - 2 pieces and EOT is kept as the last real
token (as CLIP forces the last token to EOT). PAD is id 0. The text tower
pools at the first EOT of a row (as HF CLIP does), which does not depend on
the id order.
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Iterable

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, SOT_ID, EOT_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("pad", "unk", "sot", "eot")  # ids 0-3


def train_sentencepiece(texts: Iterable[str], model_path: str,
                        vocab_size: int = 1024) -> None:
  """Trains a unigram SentencePiece model on `texts` and writes it. A
  `vocab_size` below the special tokens plus one piece per distinct character
  is a ValueError saying the least that works."""
  texts, model = list(texts), io.BytesIO()
  try:
    _train(texts, model, vocab_size)
  except RuntimeError as e:  # "Vocabulary size is smaller than required_chars. 5 vs 24."
    least = re.search(r"required_chars\S* \d+ vs (\d+)", str(e))
    if not least:
      raise
    raise ValueError(f"--vocab_size {vocab_size} is too small for these texts: SentencePiece "
                     f"needs the {len(SPECIAL_TOKENS)} special tokens plus one piece per "
                     f"distinct character, {least.group(1)} in all; use at least that") from None
  with open(model_path, "wb") as f:
    f.write(model.getvalue())


def _train(texts: list[str], model, vocab_size: int) -> None:
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=model,
      vocab_size=vocab_size,
      # A small corpus may not support `vocab_size` pieces: take what it has.
      hard_vocab_limit=False,
      model_type="unigram",
      character_coverage=1.0,
      normalization_rule_name="nmt_nfkc_cf",  # NFKC + case folding
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=SOT_ID, eos_id=EOT_ID,
      num_threads=2,
      minloglevel=2,
  )


def fixed_length(ids, sot_id: int, eot_id: int, context_length: int) -> np.ndarray:
  """[SOT, ids[:L-2]…, EOT, PAD…] as int32 [L] (PAD = 0)."""
  ids = list(ids)[: context_length - 2]
  tokens = np.zeros(context_length, np.int32)
  tokens[0], tokens[1 : 1 + len(ids)], tokens[1 + len(ids)] = sot_id, ids, eot_id
  return tokens


class Tokenizer:
  """Text → int32 tokens of fixed length (see module docstring)."""

  def __init__(self, model_path: str, context_length: int = 77):
    if context_length < 2:
      raise ValueError(f"context_length must be >= 2, got {context_length}")
    self.model_path = model_path
    self.context_length = context_length
    self._sp = spm.SentencePieceProcessor(model_file=model_path)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> np.ndarray:
    return fixed_length(self._sp.encode(text), SOT_ID, EOT_ID, self.context_length)

  def encode_batch(self, texts: list[str]) -> np.ndarray:
    return np.stack([self.encode(t) for t in texts]) if texts else np.zeros(
        (0, self.context_length), np.int32)

  def decode(self, tokens: np.ndarray) -> str:
    ids = [int(t) for t in tokens if t not in (PAD_ID, SOT_ID, EOT_ID)]
    return self._sp.decode(ids)

  # SentencePieceProcessor is not picklable by default; Grain workers need it.
  def __getstate__(self):
    return {"model_path": self.model_path,
            "context_length": self.context_length}

  def __setstate__(self, state):
    self.__init__(state["model_path"], state["context_length"])


def _special_tokens(tokenizer_config: str) -> dict:
  """{name: token string} from a transformers tokenizer_config.json, if any."""
  if not os.path.exists(tokenizer_config):
    return {}
  with open(tokenizer_config) as f:
    config = json.load(f)
  # A token is a string or, in older files, {"content": ...}.
  return {k: v["content"] if isinstance(v, dict) else v for k, v in config.items()
          if k in ("bos_token", "eos_token") and v}


class HFTokenizer:
  """A HF `tokenizers` tokenizer.json (CLIP's BPE, or our SentencePiece
  model converted by `tokenizer_json`) with the same fixed-length encoding
  and interface as `Tokenizer`: [SOT, ids…, EOT, 0, …, 0], pooled at EOT.
  The normaliser (CLIP's lower-casing, SentencePiece's NFKC) is in the JSON."""

  def __init__(self, tokenizer_json: str, context_length: int = 77,
               sot_token: str | None = None, eot_token: str | None = None):
    from tokenizers import Tokenizer as _HF
    self.tokenizer_json, self.context_length = tokenizer_json, context_length
    self._tok = _HF.from_file(tokenizer_json)
    self._tok.no_padding()  # a tokenizer.json may pad/truncate itself; we do it here
    self._tok.no_truncation()
    # SOT/EOT: given, else tokenizer_config.json's bos/eos (our exports of a
    # SentencePiece model: <s>, </s>), else CLIP's.
    special = _special_tokens(os.path.join(os.path.dirname(tokenizer_json), "tokenizer_config.json"))
    sot_token = sot_token or special.get("bos_token", "<|startoftext|>")
    eot_token = eot_token or special.get("eos_token", "<|endoftext|>")
    self.sot_id, self.eot_id = self._tok.token_to_id(sot_token), self._tok.token_to_id(eot_token)
    if self.sot_id is None or self.eot_id is None:
      raise ValueError(f"{tokenizer_json} has no {sot_token!r} / {eot_token!r} tokens")

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size()

  def encode(self, text: str) -> np.ndarray:
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return fixed_length(ids, self.sot_id, self.eot_id, self.context_length)

  def encode_batch(self, texts: list[str]) -> np.ndarray:
    return np.stack([self.encode(t) for t in texts]) if texts else np.zeros(
        (0, self.context_length), np.int32)

  def decode(self, tokens: np.ndarray) -> str:
    ids = [int(t) for t in tokens if t not in (0, self.sot_id, self.eot_id)]
    return self._tok.decode(ids)

  def __getstate__(self):
    return {"tokenizer_json": self.tokenizer_json, "context_length": self.context_length}

  def __setstate__(self, state):
    self.__init__(state["tokenizer_json"], state["context_length"])
