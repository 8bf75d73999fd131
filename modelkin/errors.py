"""Every error modelkin raises on purpose.

Each error is one clear sentence (``str(err)``) plus an optional ``hint`` saying what to do about it. Each also
inherits the builtin that fits (``LookupError``, ``ValueError``, ...) so that callers who do not know modelkin can
still catch it sensibly. The CLI turns any ``ModelkinError`` into exit code 1 and that sentence on stderr.
"""

from __future__ import annotations


class ModelkinError(Exception):
    """Root of every error modelkin raises deliberately."""

    hint: str | None = None
    exit_code = 1  # the CLI's exit status for this error; 2 marks a usage error (the command was mistyped)

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class RegistryNotFound(ModelkinError, FileNotFoundError):
    """No registry is initialised at the selected home or database."""


class ConfigError(ModelkinError, ValueError):
    """MODELKIN_DATABASE_URL or MODELKIN_STORE cannot be used (malformed, or its driver is not installed)."""


class DatabaseUnavailable(ModelkinError, ConnectionError):
    """The registry database could not be reached or refused the operation."""


class SchemaOutdated(ModelkinError, RuntimeError):
    """The database schema is older (or newer) than this modelkin release expects."""


class InvalidRef(ModelkinError, ValueError):
    """A REF string does not follow the grammar ``name``, ``name:N``, ``name@alias`` or ``sha256:<hex>``."""

    exit_code = 2


class InvalidName(ModelkinError, ValueError):
    """A model name, alias or tag key is not acceptable."""

    exit_code = 2


class ModelNotFound(ModelkinError, LookupError):
    """A REF is well formed but matches no registered version."""


class AmbiguousRef(ModelkinError, LookupError):
    """A ``sha256:`` prefix matches more than one manifest."""


class InvalidModelFile(ModelkinError, ValueError):
    """A weights file is truncated, corrupt, or its header is inconsistent."""


class UnsafeFormat(ModelkinError, ValueError):
    """A pickle-based weights file was given without ``--allow-pickle``."""


class UnsafePath(ModelkinError, ValueError):
    """A path inside a model directory escapes it (``..``, absolute path, or symlink leading outside)."""


class IntegrityError(ModelkinError, ValueError):
    """Stored bytes no longer match the digest they were registered under."""

    def __init__(self, message: str, *, expected: str, actual: str | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.expected = expected
        self.actual = actual


class InvalidFilter(ModelkinError, ValueError):
    """A ``--filter`` expression does not parse or names an unknown key."""

    exit_code = 2


class HubError(ModelkinError, RuntimeError):
    """A Hugging Face repo could not be found locally or fetched."""


class ExportError(ModelkinError, OSError):
    """An export target cannot be written."""


class InvalidQueryData(ModelkinError, ValueError):
    """Query samples for a search (or a logged score) cannot be used: wrong shape, NaN, too few per class..."""


class InvalidProbePool(ModelkinError, ValueError):
    """A probe pool file is unreadable or holds no usable unlabelled inputs."""


class RetrievalUnavailable(ModelkinError, LookupError):
    """A search cannot be answered yet: nothing is indexed, or no probe pool exists for the query's space."""


class CaptureError(ModelkinError, RuntimeError):
    """Running a model on its probe pool failed (its forward raised, or returned NaN, inf or a wrong shape)."""


class InvalidKey(ModelkinError, ValueError):
    """A key file (signing key, public key, watermark key) or signature bundle cannot be used as given."""


class WatermarkError(ModelkinError, ValueError):
    """A watermark cannot be embedded or checked here (no suitable tensor, tensor too small, missing layer)."""


class StoreUnavailable(ModelkinError, ConnectionError):
    """The blob store cannot be used: unreachable endpoint, missing bucket, access denied, missing credentials.

    ``problem`` names which, for ``store check --json``; the message never holds a secret.
    """

    def __init__(self, message: str, *, problem: str = "failed", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problem = problem
