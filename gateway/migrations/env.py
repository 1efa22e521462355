"""Alembic's environment: migrations run on the connection gateway.store hands over."""
from alembic import context

from gateway.store import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata,
                  render_as_batch=True)  # SQLite alters tables by copying them
with context.begin_transaction():
    context.run_migrations()
