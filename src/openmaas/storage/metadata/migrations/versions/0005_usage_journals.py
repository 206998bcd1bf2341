"""usage journals: how far each server process's journal of usage records reached the database

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_journals",
        sa.Column("journal", sa.String(length=64), nullable=False),
        sa.Column("applied", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("journal"),
    )


def downgrade() -> None:
    op.drop_table("usage_journals")
