"""messages name their author's account id: client_id retries and authorship belong to an account,
not to a name a re-created account can take again; on SQLite account ids are never handed out again
(AUTOINCREMENT), as PostgreSQL's sequence never does

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# SQLite rebuilds the table to change a constraint; reflecting the schema for that, SQLAlchemy warns
# that it skips the expression indexes of users and rooms (lower(name)), which this leaves alone.
_EXPRESSION_INDEX = "Skipped unsupported reflection of expression-based index"


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EXPRESSION_INDEX)
        if op.get_bind().dialect.name == "sqlite":  # (storage.db.migrate turns foreign keys off meanwhile)
            with op.batch_alter_table("users", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
            # The rebuilt table lost the index SQLAlchemy cannot reflect: make it again.
            op.create_index("ix_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
        with op.batch_alter_table("messages") as batch:
            batch.add_column(sa.Column("author_id", sa.Integer(), nullable=True))
            batch.drop_constraint("uq_messages_username_client_id", type_="unique")
            batch.create_unique_constraint("uq_messages_author_id_client_id", ["author_id", "client_id"])
    # Messages of accounts that still exist belong to them; those of deleted accounts to nobody.
    op.get_bind().execute(sa.text(
        "UPDATE messages SET author_id = (SELECT users.id FROM users WHERE lower(users.username) = "
        "lower(messages.username))"
    ))


def downgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EXPRESSION_INDEX)
        with op.batch_alter_table("messages") as batch:
            batch.drop_constraint("uq_messages_author_id_client_id", type_="unique")
            batch.create_unique_constraint("uq_messages_username_client_id", ["username", "client_id"])
            batch.drop_column("author_id")
