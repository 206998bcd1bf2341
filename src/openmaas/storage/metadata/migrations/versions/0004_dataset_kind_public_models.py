"""dataset kinds (labelled classification rows or plain text), public models, completion tokens in usage

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="classification"))
    with op.batch_alter_table("registered_models") as batch:
        batch.add_column(sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("completion_tokens")
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_column("public")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("kind")
