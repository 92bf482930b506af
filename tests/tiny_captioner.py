"""Makes a tiny, randomly initialised BLIP captioner (model + processor,
saved with save_pretrained) for the captioner-stage test. Runs under
ALIP_TORCH_PYTHON (torch + transformers); nothing is downloaded.

  python tiny_captioner.py DIR
"""

import os
import sys

import torch
from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                          BlipImageProcessor, BlipProcessor)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "blue", "green",
         "circle", "square", "photo", "of", "the", "on", "grass"]


def make(directory):
  os.makedirs(directory, exist_ok=True)
  tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})
  tokenizer.add_special_tokens({"bos_token": "[DEC]"})
  torch.manual_seed(0)
  config = BlipConfig(
      vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, image_size=32, patch_size=8),
      text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                       bos_token_id=tokenizer.bos_token_id, pad_token_id=0, sep_token_id=3))
  model = BlipForConditionalGeneration(config).eval()
  # Words only, never a special token (so never an early end): every caption
  # is max_new_tokens words.
  with torch.no_grad():
    model.text_decoder.cls.predictions.bias[:6] = -1e4
  model.save_pretrained(directory)
  BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                tokenizer=tokenizer).save_pretrained(directory)


if __name__ == "__main__":
  make(sys.argv[1])
