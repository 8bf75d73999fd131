"""What a capability's sub-object (``registry.retrieval``, ``.lineage``, ``.ownership``) may use of the registry.

The sub-objects receive the registry as a ``Host`` instead of importing ``Registry``: the dependency stays one
way (registry -> capability), and each capability states in one place which registry services it relies on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from sqlalchemy import Engine

    from modelkin.config import Settings
    from modelkin.refs import ModelRef
    from modelkin.registry.records import ModelVersion
    from modelkin.registry.registry import Registration
    from modelkin.registry.store import BlobStore


class Host(Protocol):
    """The registry services a capability may call; ``Registry`` satisfies it."""

    settings: Settings
    engine: Engine
    store: BlobStore

    def get(self, ref: str | ModelRef) -> ModelVersion: ...

    def list(
        self,
        filter: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        include_yanked: bool = False,
        latest: bool = False,
    ) -> list[ModelVersion]: ...

    def manifest(self, ref: str | ModelRef) -> dict[str, Any]: ...

    def iter_tensors(self, ref: str | ModelRef) -> Iterator[tuple[str, torch.Tensor]]: ...

    def load_state_dict(self, ref: str | ModelRef) -> dict[str, torch.Tensor]: ...

    def load_module(self, ref: str | ModelRef) -> torch.nn.Module: ...

    def register(
        self,
        source: str | os.PathLike[str] | torch.nn.Module | Mapping[str, torch.Tensor],
        *,
        name: str | None = None,
        parents: Sequence[str] = (),
        relation: str | None = None,
        tags: Mapping[str, str] | None = None,
        architecture: dict[str, Any] | None = None,
    ) -> Registration: ...

    def export(self, ref: str, out: str | os.PathLike[str], *, force: bool = False) -> Path: ...

    def declare_parents(
        self, ref: str, parents: Sequence[str], relation: str | None = None
    ) -> tuple[ModelVersion, int]: ...
