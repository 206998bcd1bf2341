"""fine-tune validation leases: the process validating a fine-tune's files holds a lease on it, so that after a
crash another process (or the restarted one) validates them again, and only one does

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tunes") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tunes") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
