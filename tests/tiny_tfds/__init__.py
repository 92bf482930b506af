"""A tiny TFDS image-classification builder for tests (TFDS wants a
builder's module in a directory of its own)."""
