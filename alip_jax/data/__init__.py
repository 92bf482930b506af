"""The online input path, what the trainer and evaluators read at run time:

  records         the record schema and the shard layout of a split
  web             decode and validation rules for web images and texts
                  (shared with the offline builder, alip_jax.tools.build)
  tokenizer       SentencePiece / HF tokenizers and the special token ids
  tokenizer_json  a SentencePiece model written as an HF tokenizer.json
  pipeline        the Grain training input pipeline and eval-time preprocessing
"""
