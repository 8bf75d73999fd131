"""modelkin: a model zoo and provenance registry.

    from modelkin import Registry
    reg = Registry.open()            # MODELKIN_HOME, or ~/.modelkin
    reg.register("model.safetensors", name="my-model")

``Registry`` and the records are imported on first use, so that ``import modelkin`` (and the CLI's start-up)
does not pay for SQLAlchemy until a registry is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelkin.errors import (
    AmbiguousRef,
    IntegrityError,
    InvalidModelFile,
    InvalidRef,
    ModelkinError,
    ModelNotFound,
    RegistryNotFound,
    UnsafeFormat,
    UnsafePath,
)
from modelkin.refs import ModelRef

if TYPE_CHECKING:
    from modelkin.registry.records import ModelVersion
    from modelkin.registry.registry import Registration, Registry

__all__ = [
    "AmbiguousRef",
    "IntegrityError",
    "InvalidModelFile",
    "InvalidRef",
    "ModelNotFound",
    "ModelRef",
    "ModelVersion",
    "ModelkinError",
    "Registration",
    "Registry",
    "RegistryNotFound",
    "UnsafeFormat",
    "UnsafePath",
]
__version__ = "0.1.0"

_LAZY = {
    "Registry": "modelkin.registry.registry",
    "Registration": "modelkin.registry.registry",
    "ModelVersion": "modelkin.registry.records",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelkin' has no attribute {name!r}")
