"""REF parsing: the one place that knows the grammar of model references.

>>> ModelRef.parse("bert")
ModelRef(name='bert', version=None, alias=None, digest_prefix=None)
>>> ModelRef.parse("bert:3").version
3
>>> ModelRef.parse("bert@prod").alias
'prod'
>>> ModelRef.parse("sha256:53aa51172d14").digest_prefix
'53aa51172d14'

Invalid: ``""``, ``"bert:"``, ``"bert:0"``, ``"bert:x"``, ``"bert@"``, ``"sha256:abc"`` (under 12 hex),
``"a b"``, ``"../x"``, ``"bert:99999999999"`` (over 2**31 - 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelkin.errors import InvalidName, InvalidRef

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]|/(?=[A-Za-z0-9]))*"
NAME_RE = re.compile(rf"^{_NAME}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
_REF_RE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<version>[1-9][0-9]*)|@(?P<alias>[A-Za-z][A-Za-z0-9._-]*))?$")
_DIGEST_RE = re.compile(r"^sha256:(?P<hex>[0-9a-f]{12,64})$")
REF_HINT = "a REF is NAME, NAME:VERSION, NAME@ALIAS or sha256:<at least 12 hex digits of the manifest digest>"
MAX_NAME = 200
MAX_VERSION = 2**31 - 1  # the database column is a 32-bit integer


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference; exactly one of version/alias/digest_prefix is set, or none (latest)."""

    name: str | None
    version: int | None = None
    alias: str | None = None
    digest_prefix: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        text = text.strip()
        if m := _DIGEST_RE.match(text.lower()):
            return cls(None, digest_prefix=m["hex"])
        if text.lower().startswith("sha256:"):
            raise InvalidRef(f"{text[:80]!r} is not a valid digest reference.", hint=REF_HINT)
        m = _REF_RE.match(text)
        if m is None or len(m["name"]) > MAX_NAME:
            raise InvalidRef(f"{text[:80]!r} is not a valid model reference.", hint=REF_HINT)
        version = int(m["version"]) if m["version"] and len(m["version"]) <= 19 else None
        if m["version"] and (version is None or version > MAX_VERSION):
            raise InvalidRef(
                f"{text!r} is not a valid model reference: versions go up to {MAX_VERSION}.", hint=REF_HINT
            )
        return cls(m["name"], version=version, alias=m["alias"])

    def __str__(self) -> str:
        if self.digest_prefix is not None:
            return f"sha256:{self.digest_prefix}"
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return str(self.name)


def check_name(name: str) -> str:
    """A model name: letters, digits, ``._-`` and single ``/`` separators (``org/model``), at most 200 chars."""
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise InvalidName(
            f"{name!r} is not a valid model name.",
            hint="use letters, digits, '.', '_', '-' and '/' (as in org/model), starting with a letter or digit",
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias) or len(alias) > MAX_NAME:
        raise InvalidName(
            f"{alias!r} is not a valid alias.", hint="an alias starts with a letter; then letters, digits, '._-'"
        )
    return alias
