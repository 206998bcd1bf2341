"""fine-tune validation and batch leases: a fine-tune's own state while its files are validated (before its
training job exists), its pre-flight data report, its error and its validation file; a batch's lease, so that
several processes over one database never run the same batch at once

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tunes") as batch:
        batch.add_column(sa.Column("created_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("error", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("report", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("validation_file", sa.String(length=64), nullable=True))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
    with op.batch_alter_table("fine_tunes") as batch:
        batch.drop_column("validation_file")
        batch.drop_column("report")
        batch.drop_column("error")
        batch.drop_column("status")
        batch.drop_column("created_at")
