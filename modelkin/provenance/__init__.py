"""Provenance capabilities over plain tensors and records: lineage (where a model came from)."""
