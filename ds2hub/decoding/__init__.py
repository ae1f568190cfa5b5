"""CTC decoders: logits -> token ids (greedy here; beam search with an n-gram LM plugs in beside)."""

from ds2hub.decoding.greedy import greedy_decode

__all__ = ["greedy_decode"]
