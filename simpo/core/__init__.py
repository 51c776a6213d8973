"""Tensor math and value checks every layer uses: per-sequence log-probs, the chunked vocabulary head, the labelled-
token head, attention masks, non-finite checks, reward metrics, RNG state, value checks and the global batch's
accumulation arithmetic."""
