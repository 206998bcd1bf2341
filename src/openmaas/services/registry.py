"""Model registry use cases: list, show, resolve references, aliases, and deleting versions."""

from __future__ import annotations

from collections.abc import Callable

from openmaas.domain.entities import ModelVersion, Principal, RegisteredModel
from openmaas.domain.refs import ModelRef, is_valid_alias, parse_ref
from openmaas.errors import InvalidRequest, NotFound
from openmaas.storage.artifacts import LocalArtifactStore
from openmaas.storage.metadata import MetadataStore


def parse(ref: str) -> ModelRef:
    parsed = parse_ref(ref)
    if parsed is None:
        raise InvalidRequest(
            f"invalid model reference {ref!r}: use 'name', 'name:VERSION' or 'name:ALIAS'",
            param="model",
            code="invalid_model_reference",
        )
    return parsed


class RegistryService:
    def __init__(self, store: MetadataStore, artifacts: LocalArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts
        # Called with each version that stops existing, so a serving pool can drop it.
        self.on_version_deleted: list[Callable[[ModelVersion], None]] = []

    def list(self, principal: Principal) -> list[RegisteredModel]:
        return self.store.models.list(principal.tenant_id)

    def get(self, principal: Principal, name: str) -> RegisteredModel:
        model = self.store.models.get(principal.tenant_id, name)
        if model is None:
            raise NotFound(f"no model {name!r}", param="model", code="model_not_found")
        return model

    def resolve(self, principal: Principal, ref: str) -> ModelVersion:
        parsed = parse(ref)
        version = self.store.models.resolve(principal.tenant_id, parsed)
        if version is None:
            raise NotFound(f"no model version matches {ref!r}", param="model", code="model_not_found")
        return version

    def set_alias(self, principal: Principal, name: str, alias: str, version: int) -> RegisteredModel:
        if not is_valid_alias(alias):
            raise InvalidRequest(
                f"invalid alias {alias!r}: a letter, then letters, digits, '_' or '-' ('latest' is reserved)",
                param="alias",
                code="invalid_alias",
            )
        if not self.store.models.set_alias(principal.tenant_id, name, alias, version):
            raise NotFound(f"model {name!r} has no version {version}", param="version", code="model_not_found")
        return self.get(principal, name)

    def delete_alias(self, principal: Principal, name: str, alias: str) -> RegisteredModel:
        if not self.store.models.delete_alias(principal.tenant_id, name, alias):
            raise NotFound(f"model {name!r} has no alias {alias!r}", param="alias", code="alias_not_found")
        return self.get(principal, name)

    def delete_version(self, principal: Principal, name: str, version: int) -> ModelVersion:
        deleted = self.store.models.delete_version(principal.tenant_id, name, version)
        if deleted is None:
            raise NotFound(f"model {name!r} has no version {version}", param="version", code="model_not_found")
        self._forget(deleted)
        return deleted

    def delete_model(self, principal: Principal, name: str) -> RegisteredModel:
        deleted = self.store.models.delete_model(principal.tenant_id, name)
        if deleted is None:
            raise NotFound(f"no model {name!r}", param="model", code="model_not_found")
        for version in deleted.versions:
            self._forget(version)
        return deleted

    def _forget(self, version: ModelVersion) -> None:
        for callback in self.on_version_deleted:
            callback(version)
        if self.store.models.artifact_references(version.artifact_sha256) == 0:
            for sha256 in version.files.values():
                self.artifacts.delete(sha256)
