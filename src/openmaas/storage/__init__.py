"""Persistence: metadata (SQLAlchemy + Alembic) and artifacts (content-addressed files)."""
