"""Retrieval: rank registered models for a new task from a few labelled samples (Know2Vec-style).

Pure algorithms over arrays and tensors live here (probe-space encoder, black-box capture, knowledge
serialisation, encoders, the faiss index, transferability baselines); ``facade.Retrieval`` wires them to the
registry's database and blob store.
"""
