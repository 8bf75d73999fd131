"""Relational side of the registry: SQLAlchemy 2.0 schema, engine factory and Alembic migrations."""
