"""a random id of the deployment, so that processes sharing a Redis server tell their own messages apart

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_head") as batch:
        batch.add_column(sa.Column("deployment", sa.String(length=32), nullable=False, server_default=""))
    op.get_bind().execute(sa.text("UPDATE change_head SET deployment = :id"), {"id": secrets.token_hex(8)})


def downgrade() -> None:
    with op.batch_alter_table("change_head") as batch:
        batch.drop_column("deployment")
