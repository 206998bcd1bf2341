"""Wire schemas of the routes the dashboard reads besides the core API: the calling key (`/v1/me`), the recipe
catalogue (`/v1/recipes`) and a dataset's first rows (`/v1/datasets/{id}/rows`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class MeOut(BaseModel):
    """The calling key: its tenant and what it may do (a dashboard shows and hides actions by `scopes`)."""

    object: Literal["api_key.self"] = "api_key.self"
    tenant_id: str
    tenant_name: str
    key_id: str
    prefix: str = Field(description="The key's label in listings (not part of the secret).")
    scopes: list[str]
    is_admin: bool
    expires_at: float | None
    key_limits: dict[str, int] = Field(description="The key's own limits (requests and tokens per minute).")
    tenant_limits: dict[str, int] = Field(description="Its tenant's limits, which apply as well.")


class RecipeOut(BaseModel):
    object: Literal["recipe"] = "recipe"
    name: str
    dataset_kind: str = Field(description="The kind of dataset it trains on: 'classification' or 'text'.")
    base_task: str | None = Field(description="The task of the registry model its `base_model` names, if any.")
    hyperparameters: dict[str, Any] = Field(
        description="A JSON Schema of the recipe's hyperparameters: each property's type, default, bounds "
        "(minimum, maximum, exclusiveMinimum, exclusiveMaximum), choices (enum) and description."
    )


class DatasetRows(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(
        description="Rows as training reads them: {text, label} for classification, {text} or {messages} for text."
    )
    has_more: bool
