"""Timestamps as the registry stores them: UTC, whichever database (and driver) hands them back."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone, PostgreSQL with one: both are stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
