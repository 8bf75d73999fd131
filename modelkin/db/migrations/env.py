"""Alembic environment: runs migrations on the engine modelkin hands over (see modelkin.db.migrate)."""

from alembic import context

from modelkin.db.schema import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
