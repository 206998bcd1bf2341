"""API keys: no part of a key is stored, old rows lose theirs in migration 0006, and a short admin key is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from pydantic import ValidationError

from openmaas.config import Settings
from openmaas.services.auth import AuthService, generate_key, hash_key
from openmaas.storage.metadata import open_store
from openmaas.storage.metadata.engine import MIGRATIONS, create_db_engine

ADMIN_KEY = "om-test-admin-key-0123456789abcdef"


def _stored_prefixes(url: str) -> list[str]:
    engine = create_db_engine(url)
    with engine.connect() as conn:
        prefixes = [row[0] for row in conn.execute(sa.text("select prefix from api_keys"))]
    engine.dispose()
    return prefixes


def test_migration_0006_replaces_stored_key_beginnings_and_keys_still_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    engine = create_db_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    key = generate_key()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")  # as a server before 0006 left it: the key's first 12 characters
        conn.execute(sa.text("insert into tenants values ('default', 'default', '{}', 0, 0)"))
        conn.execute(
            sa.text(
                "insert into api_keys (id, tenant_id, prefix, hash, scopes, created_at, revoked, limits) "
                "values ('key_1', 'default', :prefix, :hash, '[\"read\"]', 0, 0, '{}')"
            ),
            {"prefix": key[:12], "hash": hash_key(key)},
        )
    engine.dispose()

    store = open_store(url)  # migrates to the head
    try:
        [prefix] = _stored_prefixes(url)
        assert prefix not in key and key[:12] != prefix and len(prefix) == 12
        principal = AuthService(store.tenants, store.api_keys).authenticate(f"Bearer {key}")
        assert principal.key_id == "key_1"
    finally:
        store.close()


def test_new_keys_store_no_part_of_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    store = open_store(url)
    try:
        auth = AuthService(store.tenants, store.api_keys)
        assert auth.bootstrap(ADMIN_KEY, tmp_path / "admin.key") is None
        [prefix] = _stored_prefixes(url)
        assert all(prefix[i : i + 4] not in ADMIN_KEY for i in range(len(prefix) - 3))
        assert auth.authenticate(f"Bearer {ADMIN_KEY}").is_admin
    finally:
        store.close()


def test_a_short_admin_key_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(admin_key="om-short")
    assert Settings(admin_key="").admin_key == ""  # empty: unset, one is generated
    env = {**os.environ, "OPENMAAS_ADMIN_KEY": "om-short"}
    served = subprocess.run(
        [sys.executable, "-m", "openmaas", "serve", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2
    assert "OPENMAAS_ADMIN_KEY" in served.stderr and "at least 32" in served.stderr
    assert "Traceback" not in served.stderr
