"""Lineage from the weights themselves: sketches, tensor pairing, parent detection, the ancestry tree, audit.

Everything in this package except ``facade`` and ``storage`` is a pure function of tensors, sketches and
numbers; the facade wires it to the registry (a ``Host``).
"""
