"""Provenance: where a model came from (lineage) and whether it is yours (watermark, signing)."""
