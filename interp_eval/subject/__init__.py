"""Subject language model: loading, hookpoints, token streams from corpora, activation caches."""
