"""Data: parallel-text loaders, corpus builders, tokenizers, token-based batching."""
