"""Reproducible reference zoos with ground truth, for the demo, the tests and the benchmarks.

``build_zoo(OUT, size, seed)`` (or ``python -m modelkin.zoo build OUT --size tiny --seed 0``) writes models,
probe inputs, query tasks and a ground-truth file; see :mod:`modelkin.zoo.build` for the layout.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelkin.zoo.build import FORMAT_VERSION, GROUND_TRUTH, ZooError, build_zoo
    from modelkin.zoo.plan import SIZES

__all__ = ["FORMAT_VERSION", "GROUND_TRUTH", "SIZES", "ZooError", "build_zoo"]

_HOMES = {"SIZES": "modelkin.zoo.plan"}


def __getattr__(name: str) -> Any:
    """Imported on first use: building a zoo needs torch and scikit-learn, reading one (registration) does not."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES.get(name, "modelkin.zoo.build")), name)
