"""Our SentencePiece model as a HF `tokenizers` tokenizer.json that encodes
texts to the same ids as `tokenizer.Tokenizer`: [SOT, pieces…, EOT, PAD…].

The unigram pieces and scores are copied; SentencePiece's normaliser (NFKC +
case folding, compiled into the model as a character map) runs as the
`Precompiled` normaliser; its whitespace rules (strip, collapse runs, "▁"
before every word) as Strip + Replace + Metaspace. SOT/EOT come from a
template post-processor, so `tokenizer(texts, padding='max_length',
truncation=True, max_length=L)` gives our fixed-length rows, also when a text
is truncated (EOT stays last). Unknown characters map to <unk> (id 1), a run
of them to one <unk>, as SentencePiece does.

Two differences stay. `Precompiled` maps a whole grapheme by its first
character's rule and drops the rest (huggingface/tokenizers#2116), where
SentencePiece maps character by character: an NFC pass first composes what
can be composed, but a combining mark after a character the map rewrites
and that has no composed form (an upper-case X + U+0301, a no-break space +
a mark) is lost. And the special pieces written literally in a text ("<s>",
"</s>", "<pad>", "<unk>") are split into characters by SentencePiece and
matched as the special token by transformers.
"""

from __future__ import annotations

import json
import os
import struct
import types

from alip_jax.data.tokenizer import EOT_ID, PAD_ID, SOT_ID, UNK_ID

UNIGRAM, CONTROL, UNKNOWN = 1, 3, 2  # sentencepiece_model.proto enums


def _fields(data: bytes):
  """(field number, value) of one protobuf message, in order: varints as int,
  length-delimited as bytes, 32-bit as 4 bytes. The model file is read with
  this instead of sentencepiece's generated module, which needs protobuf
  >= 7 at run time while apache-beam needs < 7."""
  pos = 0

  def varint():
    nonlocal pos
    value = shift = 0
    while True:
      byte = data[pos]
      pos += 1
      value |= (byte & 0x7F) << shift
      shift += 7
      if byte < 0x80:
        return value

  while pos < len(data):
    key = varint()
    number, wire = key >> 3, key & 7
    if wire == 0:
      yield number, varint()
    elif wire == 2:
      size = varint()
      yield number, data[pos:pos + size]
      pos += size
    elif wire in (1, 5):
      size = 8 if wire == 1 else 4
      yield number, data[pos:pos + size]
      pos += size
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")


def _int32(value: int) -> int:
  return value - (1 << 64) if value >= 1 << 63 else value  # negative int32 varints


def _read_proto(model_path: str) -> types.SimpleNamespace:
  """The parts of a SentencePiece ModelProto the conversion needs (field
  numbers and defaults as in sentencepiece_model.proto)."""
  with open(model_path, "rb") as f:
    data = f.read()
  pieces, spec, norm = [], {}, {}
  for number, value in _fields(data):
    if number == 1:  # pieces: piece = 1, score = 2 (float), type = 3 (default NORMAL)
      piece = {1: b"", 2: b"\0\0\0\0", 3: 1}
      piece.update(_fields(value))
      pieces.append(types.SimpleNamespace(piece=piece[1].decode("utf-8"),
                                          score=struct.unpack("<f", piece[2])[0], type=piece[3]))
    elif number == 2:
      spec.update(_fields(value))
    elif number == 3:
      norm.update(_fields(value))
  model_type, byte_fallback = spec.get(3, UNIGRAM), bool(spec.get(35, False))
  if model_type != UNIGRAM or byte_fallback:
    raise ValueError(f"{model_path}: only unigram models without byte fallback convert "
                     f"(this one has model_type={model_type}, byte_fallback={byte_fallback})")
  ids = tuple(_int32(spec.get(field, default))
              for field, default in ((43, -1), (40, 0), (41, 1), (42, 2)))  # pad unk bos eos
  if ids != (PAD_ID, UNK_ID, SOT_ID, EOT_ID):
    raise ValueError(f"{model_path}: pad/unk/bos/eos ids are {ids}, the trainer uses "
                     f"{(PAD_ID, UNK_ID, SOT_ID, EOT_ID)}")
  if not all(norm.get(field, 1) for field in (3, 4, 5)):
    # add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces
    raise ValueError(f"{model_path}: the normaliser's whitespace options differ from the "
                     f"defaults train_sentencepiece uses; this converter assumes them")
  return types.SimpleNamespace(pieces=pieces, precompiled_charsmap=norm.get(2, b""))


def from_sentencepiece(model_path: str, context_length: int):
  """The model at `model_path` → a `tokenizers.Tokenizer` (see module doc)."""
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
  from tokenizers import pre_tokenizers, processors
  proto = _read_proto(model_path)
  vocab = [(p.piece, p.score) for p in proto.pieces]
  tok = Tokenizer(models.Unigram(vocab, unk_id=UNK_ID, byte_fallback=False))
  charsmap = proto.precompiled_charsmap
  tok.normalizer = normalizers.Sequence(
      [normalizers.NFC()] + ([normalizers.Precompiled(charsmap)] if charsmap else [])
      + [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")])
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  special = [(i, p.piece) for i, p in enumerate(proto.pieces) if p.type in (CONTROL, UNKNOWN)]
  tok.add_special_tokens([AddedToken(piece, normalized=False, special=True) for _, piece in special])
  sot, eot = proto.pieces[SOT_ID].piece, proto.pieces[EOT_ID].piece
  tok.post_processor = processors.TemplateProcessing(
      single=f"{sot} $A {eot}", pair=f"{sot} $A {eot} $B {eot}",
      special_tokens=[(sot, SOT_ID), (eot, EOT_ID)])
  tok.enable_truncation(context_length)
  tok.enable_padding(pad_id=PAD_ID, pad_token=proto.pieces[PAD_ID].piece, length=context_length)
  return tok


def write_hf_tokenizer(model_path: str, context_length: int, directory: str) -> dict:
  """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json
  into `directory` (what `AutoTokenizer.from_pretrained` reads); returns the
  special tokens {name: piece}."""
  proto = _read_proto(model_path)
  tokens = {"pad_token": proto.pieces[PAD_ID].piece, "unk_token": proto.pieces[UNK_ID].piece,
            "bos_token": proto.pieces[SOT_ID].piece, "eos_token": proto.pieces[EOT_ID].piece}
  os.makedirs(directory, exist_ok=True)
  from_sentencepiece(model_path, context_length).save(os.path.join(directory, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "processor_class": "CLIPProcessor",
            "model_max_length": int(context_length), "padding_side": "right",
            "truncation_side": "right", "clean_up_tokenization_spaces": False,
            "model_input_names": ["input_ids", "attention_mask"], **tokens}
  for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", tokens)):
    with open(os.path.join(directory, name), "w") as f:
      json.dump(content, f, indent=1)
  return tokens
