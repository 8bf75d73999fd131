"""modelkin: a model zoo and provenance registry.

    from modelkin import Registry
    reg = Registry.open()            # MODELKIN_HOME, or ~/.modelkin
    reg.register("model.safetensors", name="my-model")
"""

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
