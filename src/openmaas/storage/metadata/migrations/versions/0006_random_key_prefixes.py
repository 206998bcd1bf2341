"""random key prefixes: a key's listed prefix was its first 12 characters; now a random label apart from it

Keys are found by their hash since; every existing row gets a new random prefix, so no part of a key
stays in the database. The old prefixes cannot come back: downgrade leaves the random ones.

Revision ID: 0006
Revises: 0005
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("prefix", sa.String))
    connection = op.get_bind()
    for (key_id,) in connection.execute(sa.select(keys.c.id)).all():
        connection.execute(sa.update(keys).where(keys.c.id == key_id).values(prefix=secrets.token_hex(6)))


def downgrade() -> None:
    pass
