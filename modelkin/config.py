"""Where a registry lives, read once from the environment.

``MODELKIN_HOME`` (or ``--home``) selects the registry directory, by default ``~/.modelkin``.
``MODELKIN_DATABASE_URL`` overrides its database (SQLite file inside the home by default) and
``MODELKIN_STORE`` its blob store (``HOME/objects`` by default; a local path or an fsspec URL such as ``s3://…``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEBUG_VARIABLE = "MODELKIN_DEBUG"


@dataclass(frozen=True)
class Settings:
    """The three locations that make up one registry."""

    home: Path
    database_url: str
    store: str

    @classmethod
    def resolve(
        cls,
        home: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        store: str | None = None,
    ) -> Settings:
        """Explicit arguments win over ``MODELKIN_*`` variables, which win over defaults under the home."""
        home_path = Path(home or os.environ.get("MODELKIN_HOME") or Path.home() / ".modelkin").expanduser()
        home_path = home_path.absolute()
        url = database_url or os.environ.get("MODELKIN_DATABASE_URL") or f"sqlite:///{home_path / 'registry.db'}"
        blob_store = store or os.environ.get("MODELKIN_STORE") or str(home_path / "objects")
        return cls(home=home_path, database_url=url, store=blob_store)

    @property
    def staging(self) -> Path:
        """Where registrations convert files and remote blobs are hashed before upload; ``gc`` cleans it."""
        return self.home / "staging"


def debug_enabled() -> bool:
    """Tracebacks are shown only when ``MODELKIN_DEBUG`` is set to something other than 0/empty."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
