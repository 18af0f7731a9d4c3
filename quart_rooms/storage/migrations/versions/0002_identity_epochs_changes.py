"""token versions, room epochs, tombstones, the admin-change log, names unique regardless of case

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _refuse_case_duplicates(table: str, column: str) -> None:
    """Stop with a clear message when two names differ only in case (they cannot stay unique)."""
    rows = op.get_bind().execute(
        sa.text(f"SELECT lower({column}) FROM {table} GROUP BY lower({column}) HAVING count(*) > 1")
    ).all()
    if rows:
        names = ", ".join(sorted(r[0] for r in rows))
        raise RuntimeError(
            f"{table}: these names exist in several cases ({names}); rename or delete all but one, then migrate again"
        )


def upgrade() -> None:
    _refuse_case_duplicates("users", "username")
    _refuse_case_duplicates("rooms", "name")
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_version", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("epoch", sa.String(length=20), nullable=False, server_default="0"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
    op.create_index("ix_rooms_name_lower", "rooms", [sa.text("lower(name)")], unique=True)
    op.create_table(
        "changes",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    head = op.create_table(
        "change_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "last_id": 0}])


def downgrade() -> None:
    op.drop_table("change_head")
    op.drop_table("changes")
    op.drop_index("ix_rooms_name_lower", table_name="rooms")
    op.drop_index("ix_users_username_lower", table_name="users")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("deleted")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("epoch")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
