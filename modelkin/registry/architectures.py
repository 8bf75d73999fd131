"""Executable architectures: turn a JSON architecture spec into a ready ``torch.nn.Module``.

Lineage and watermark verification need only weights, but retrieval probing, watermark embedding with data and
the Neural Lineage feature check must *run* a model. A version may therefore carry a spec, a JSON object
``{"family": ..., **params}``, taken from ``--arch FILE``, a ``config.json`` or the safetensors ``__metadata__``
key :data:`ARCH_METADATA_KEY`.

Families:

* ``mlp`` and ``cnn`` (built in; they cover the reference zoo). Their modules have a ``trunk`` (everything below
  the classifier; its output is the penultimate feature vector used by linear probes and Neural Lineage) and a
  linear ``head``, with ``forward(x) = head(trunk(x))`` and tensors named ``trunk.<i>.weight``, ``head.weight``...
* ``hf-transformers``: a Hugging Face ``config.json``; building it needs the optional ``transformers`` extra.
* anything else through the ``modelkin.architectures`` entry-point group: the entry point's name is the family
  and it loads to an object with ``build(spec) -> nn.Module`` (optionally ``validate(spec) -> dict`` and
  ``input_space(spec) -> str | None``), or to a plain callable ``spec -> nn.Module``. Built-in names win.

Every executable model declares its input space (``"digits-64"``: 64 floats in [0, 1]), which selects the probe
pool that retrieval runs it on. torch is imported only when a module is built: the CLI imports this module, and
importing torch costs seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from modelkin.canonical import canonical_json
from modelkin.errors import InvalidModelFile, ModelkinError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ARCH_METADATA_KEY",
    "ENTRY_POINT_GROUP",
    "ArchitectureUnavailable",
    "InvalidArchitecture",
    "UnknownArchitecture",
    "build_module",
    "input_space",
    "known_families",
    "spec_from_hf_config",
    "spec_from_safetensors_metadata",
    "spec_to_safetensors_metadata",
    "validate_spec",
]

ARCH_METADATA_KEY = "modelkin.architecture"
ENTRY_POINT_GROUP = "modelkin.architectures"
HF_FAMILY = "hf-transformers"


class UnknownArchitecture(ModelkinError, LookupError):
    """A spec names a family that is neither built in nor provided by an installed plugin."""


class InvalidArchitecture(ModelkinError, ValueError):
    """A spec is not a JSON object with a string ``family``, or its parameters are wrong for the family."""


class ArchitectureUnavailable(ModelkinError, ImportError):
    """A known family cannot be built here because an optional dependency is missing."""


@dataclass(frozen=True)
class _Family:
    """How one family validates, builds and names the input space of its specs."""

    validate: Callable[[dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Any]], nn.Module]
    input_space: Callable[[dict[str, Any]], str | None]


# --- parameter checks shared by the built-in families -------------------------------------------------------


def _positive_int(spec: Mapping[str, Any], key: str) -> int:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArchitecture(
            f"architecture {spec['family']!r} needs {key!r} to be a positive integer, got {value!r}"
        )
    return value


def _positive_ints(spec: Mapping[str, Any], key: str, *, min_len: int, max_len: int) -> list[int]:
    value = spec.get(key)
    if (
        not isinstance(value, list)
        or not min_len <= len(value) <= max_len
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise InvalidArchitecture(
            f"architecture {spec['family']!r} needs {key!r} to be a list of {min_len} to {max_len} positive "
            f"integers, got {value!r}"
        )
    return list(value)


def _space_name(spec: Mapping[str, Any]) -> str:
    value = spec.get("input_space")
    if not isinstance(value, str) or not value:
        raise InvalidArchitecture(
            f"architecture {spec['family']!r} needs 'input_space', the name of the inputs it takes "
            f"(for example 'digits-64'), got {value!r}"
        )
    return value


def _no_extra_keys(spec: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(spec) - allowed - {"family"})
    if extra:
        raise InvalidArchitecture(
            f"architecture {spec['family']!r} does not take {', '.join(map(repr, extra))}",
            hint=f"its parameters are: {', '.join(sorted(allowed))}",
        )


def _declared_space(spec: dict[str, Any]) -> str | None:
    value = spec.get("input_space")
    return value if isinstance(value, str) else None


# --- built-in families --------------------------------------------------------------------------------------


def _validate_mlp(spec: dict[str, Any]) -> dict[str, Any]:
    _no_extra_keys(spec, {"in_features", "hidden", "num_classes", "input_space"})
    return {
        "family": "mlp",
        "in_features": _positive_int(spec, "in_features"),
        "hidden": _positive_ints(spec, "hidden", min_len=0, max_len=16),
        "num_classes": _positive_int(spec, "num_classes"),
        "input_space": _space_name(spec),
    }


def _validate_cnn(spec: dict[str, Any]) -> dict[str, Any]:
    _no_extra_keys(spec, {"image_shape", "channels", "num_classes", "input_space"})
    shape = _positive_ints(spec, "image_shape", min_len=3, max_len=3)
    channels = _positive_ints(spec, "channels", min_len=1, max_len=4)
    if min(shape[1:]) < 2 ** (len(channels) - 1):
        raise InvalidArchitecture(
            f"architecture 'cnn' halves the image {len(channels) - 1} time(s), too often for image_shape {shape}"
        )
    return {
        "family": "cnn",
        "image_shape": shape,
        "channels": channels,
        "num_classes": _positive_int(spec, "num_classes"),
        "input_space": _space_name(spec),
    }


@functools.cache
def _classifier_class() -> type[nn.Module]:
    """Defined on first use so that importing this module does not import torch."""
    from torch import nn

    class Classifier(nn.Module):
        """``head(trunk(x))``: the split lets probes read the penultimate features as ``trunk(x)``."""

        def __init__(self, trunk: nn.Module, features: int, num_classes: int) -> None:
            super().__init__()
            self.trunk = trunk
            self.head = nn.Linear(features, num_classes)

        def forward(self, x: Any) -> Any:
            return self.head(self.trunk(x))

    return Classifier


def _build_mlp(spec: dict[str, Any]) -> nn.Module:
    """Linear+ReLU blocks (tensors ``trunk.0``, ``trunk.2``, ...); no hidden layers makes a linear classifier."""
    from torch import nn

    layers: list[nn.Module] = []
    width = spec["in_features"]
    for hidden in spec["hidden"]:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return _classifier_class()(nn.Sequential(*layers), width, spec["num_classes"])


def _build_cnn(spec: dict[str, Any]) -> nn.Module:
    """Takes flat row-major ``C*H*W`` vectors; 3x3 conv+ReLU blocks with 2x2 max-pooling between them, then
    average-pooling to 2x2 so the feature size does not depend on the image size."""
    from torch import nn

    c, h, w = spec["image_shape"]
    layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
    for i, out in enumerate(spec["channels"]):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU()]
        c = out
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    return _classifier_class()(nn.Sequential(*layers), 4 * c, spec["num_classes"])


def _validate_hf(spec: dict[str, Any]) -> dict[str, Any]:
    """Only the shape of the config is checked, so a spec can be stored where ``transformers`` is not installed."""
    _no_extra_keys(spec, {"config", "input_space"})
    config = spec.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InvalidArchitecture(
            f"architecture {HF_FAMILY!r} needs 'config', a Hugging Face config.json object with a 'model_type'"
        )
    normalised = {"family": HF_FAMILY, "config": config}
    if "input_space" in spec:
        normalised["input_space"] = _space_name(spec)
    return normalised


def _build_hf(spec: dict[str, Any]) -> nn.Module:
    """The class named first in ``architectures`` when transformers has it, else the bare ``AutoModel``."""
    try:
        import transformers
    except ImportError:
        raise ArchitectureUnavailable(
            f"architecture {HF_FAMILY!r} ({spec['config']['model_type']}) needs the transformers package",
            hint="pip install 'modelkin[transformers]'",
        ) from None
    config = dict(spec["config"])
    hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    names = [n for n in spec["config"].get("architectures") or [] if hasattr(transformers, n)]
    # a concrete class (BertModel) is built from its config directly; only Auto classes have from_config
    module: nn.Module = (
        getattr(transformers, names[0])(hf_config) if names else transformers.AutoModel.from_config(hf_config)
    )
    return module


_BUILTIN: dict[str, _Family] = {
    "mlp": _Family(_validate_mlp, _build_mlp, _declared_space),
    "cnn": _Family(_validate_cnn, _build_cnn, _declared_space),
    HF_FAMILY: _Family(_validate_hf, _build_hf, _declared_space),
}


# --- plugins ------------------------------------------------------------------------------------------------


def _plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """Read on every call (it is cheap) so that a plugin installed while Python runs is seen at once."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN}


def _plugin_family(entry_point: metadata.EntryPoint) -> _Family:
    where = f"plugin {entry_point.value!r} for architecture {entry_point.name!r}"
    try:
        plugin = entry_point.load()
    except Exception as exc:  # a broken plugin must not crash the registry
        raise UnknownArchitecture(
            f"{where} failed to load: {exc}", hint=f"reinstall or fix the package that provides {entry_point.value!r}"
        ) from exc
    build = getattr(plugin, "build", plugin)
    if not callable(build):
        raise UnknownArchitecture(f"{where} has no build(spec) function and is not callable")
    check = getattr(plugin, "validate", None)
    space = getattr(plugin, "input_space", _declared_space)

    def validate(spec: dict[str, Any]) -> dict[str, Any]:
        if check is None:
            return spec
        try:
            normalised = check(spec)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidArchitecture(f"architecture {entry_point.name!r}: {exc}") from exc
        if not isinstance(normalised, dict) or normalised.get("family") != entry_point.name:
            raise InvalidArchitecture(f"{where}: validate() must return the spec as a dict with the same family")
        return normalised

    return _Family(validate, build, space)


def known_families() -> list[str]:
    """Built-in families and those of installed plugins, sorted."""
    return sorted(set(_BUILTIN) | set(_plugin_entry_points()))


def _family(spec: object) -> tuple[_Family, dict[str, Any]]:
    if not isinstance(spec, dict):
        raise InvalidArchitecture(f"an architecture spec must be a JSON object, got {type(spec).__name__}")
    name = spec.get("family")
    if not isinstance(name, str) or not name:
        raise InvalidArchitecture(
            "an architecture spec needs a string 'family'", hint=f"known families: {', '.join(known_families())}"
        )
    if name in _BUILTIN:
        return _BUILTIN[name], spec
    plugins = _plugin_entry_points()
    if name not in plugins:
        raise UnknownArchitecture(
            f"unknown architecture family {name!r}; known families: {', '.join(known_families())}",
            hint=f"install a package that provides it through the {ENTRY_POINT_GROUP!r} entry-point group",
        )
    return _plugin_family(plugins[name]), spec


# --- public API ---------------------------------------------------------------------------------------------


def validate_spec(spec: object) -> dict[str, Any]:
    """The normalised spec; raises :class:`UnknownArchitecture` or :class:`InvalidArchitecture`."""
    family, checked = _family(spec)
    return family.validate(checked)


def build_module(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised module for ``spec`` (in train mode, on the CPU).

    Its ``state_dict()`` has the names and shapes that a model of this spec is saved with, so callers load
    weights with ``load_state_dict(..., strict=True)`` and call ``.eval()``.
    """
    family, checked = _family(spec)
    return family.build(family.validate(checked))


def input_space(spec: dict[str, Any]) -> str | None:
    """The input space a model of this spec runs on (``"digits-64"``), or None if it declares none."""
    family, checked = _family(spec)
    return family.input_space(family.validate(checked))


def spec_from_hf_config(config: object) -> dict[str, Any] | None:
    """The spec for a Hugging Face ``config.json`` (an object with a ``model_type``); None for anything else."""
    if isinstance(config, dict) and isinstance(config.get("model_type"), str):
        return {"family": HF_FAMILY, "config": config}
    return None


def spec_from_safetensors_metadata(metadata: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The spec stored under :data:`ARCH_METADATA_KEY`, or None if there is none.

    The spec is parsed but not validated: a registry can keep a spec whose plugin is not installed here.
    """
    if not metadata or ARCH_METADATA_KEY not in metadata:
        return None
    from modelkin.registry.untrusted import load_json

    try:
        spec = load_json(metadata[ARCH_METADATA_KEY], f"the safetensors metadata {ARCH_METADATA_KEY!r}")
    except InvalidModelFile as exc:
        raise InvalidArchitecture(str(exc).removesuffix(".")) from None
    if not isinstance(spec, dict):
        raise InvalidArchitecture(f"the safetensors metadata {ARCH_METADATA_KEY!r} is not a JSON object")
    return spec


def spec_to_safetensors_metadata(spec: dict[str, Any]) -> dict[str, str]:
    """The ``__metadata__`` entry that carries ``spec`` as canonical JSON (equal specs give equal bytes)."""
    return {ARCH_METADATA_KEY: canonical_json(spec).decode()}
