"""OpenAI's files: `FileObject` and `FileDeleted` as the spec names them, and the purposes we accept."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# What a client may upload; ours write `batch_output` and `fine-tune-results`.
UploadPurpose = Literal["fine-tune", "batch"]
Purpose = Literal["fine-tune", "batch", "batch_output", "fine-tune-results"]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Purpose
    status: Literal["uploaded", "processed", "error"] = Field(default="processed", description="Deprecated by OpenAI.")
    status_details: str | None = None
    expires_at: int | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
