"""Batch jobs over an exported model: image lists, embedding, pairs, top-k, support sets, CSV output."""
