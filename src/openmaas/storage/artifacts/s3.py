"""The artifact store on S3 (or any S3-compatible store), with a local read cache.

The client is boto3: it is AWS's reference client and speaks the standard S3 API only, so the same code runs on
AWS, MinIO, Cloudflare R2 or moto, chosen with the standard `AWS_ENDPOINT_URL` and credentials from the standard
`AWS_*` variables or files. Its transfer manager does multipart uploads and retries for us. (s3fs adds a
filesystem layer and fsspec's caching we do not need; obstore is fast but young, and its Rust client is a second
S3 implementation to trust.)

Keys: `PREFIX/blobs/ab/ab…` for blobs, `PREFIX/refs/NAME.json` for references, `PREFIX/NAME/…` for a scope.
Atomic: an object appears only when its single PUT or its multipart upload completes, so a writer killed
mid-upload leaves no object (only an incomplete upload, which `clean_temporary` aborts once stale). Verified:
every read hashes the bytes; a copy enters the read cache only after its hash matched, and since a blob's name
is its hash, a cached copy never goes stale.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from openmaas.storage.artifacts.store import (
    CHUNK,
    ArtifactCorrupted,
    ArtifactStore,
    check_name,
    check_sha256,
    clean_directory,
    decode_ref,
    encode_ref,
    fsync_directory,
    sha256_file,
)

PART_SIZE = 8 << 20  # boto3's own default; S3 refuses parts under 5 MiB (but the last)
STALE_UPLOAD = datetime.timedelta(days=1)  # an incomplete multipart upload older than this was abandoned


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def _missing(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in {
        "404",
        "NoSuchKey",
        "NotFound",
    }


class S3ArtifactStore(ArtifactStore):
    def __init__(
        self, bucket: str, prefix: str, cache_dir: Path, *, client: Any = None, part_size: int = PART_SIZE
    ) -> None:
        import boto3  # here: only a server configured for S3 pays for importing it
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = cache_dir
        self.part_size = part_size
        self.client = client if client is not None else boto3.client("s3")
        self.transfer = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)

    @classmethod
    def from_url(cls, url: str, cache_dir: Path) -> S3ArtifactStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, cache_dir)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def blob_key(self, sha256: str) -> str:
        return self._key(f"blobs/{sha256[:2]}/{check_sha256(sha256)}")

    def _ref_key(self, name: str) -> str:
        return self._key(f"refs/{check_name(name)}.json")

    def cache_path(self, sha256: str) -> Path:
        return self.cache_dir / "blobs" / sha256[:2] / check_sha256(sha256)

    @property
    def scratch(self) -> Path:
        path = self.cache_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.blob_key(sha256))
        except Exception as error:
            if _missing(error):
                return False
            raise
        return True

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.exists(sha256):
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, self.blob_key(sha256), Config=self.transfer)
        return sha256

    def put_file(self, source: Path) -> str:
        sha256 = sha256_file(source)
        if not self.exists(sha256):
            self.client.upload_file(str(source), self.bucket, self.blob_key(sha256), Config=self.transfer)
        return sha256

    def _get(self, key: str, what: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as error:
            if _missing(error):
                raise ArtifactCorrupted(f"{what} is missing") from None
            raise

    def read_bytes(self, sha256: str) -> bytes:
        data: bytes = self._get(self.blob_key(sha256), f"blob {sha256}").read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupted(f"blob {sha256} does not match its hash")
        return data

    def local_file(self, sha256: str) -> Path:
        cached = self.cache_path(sha256)
        if cached.is_file():  # verified when it was filled; its name is its hash, so it is still right
            return cached
        body = self._get(self.blob_key(sha256), f"blob {sha256}")
        fd, name = tempfile.mkstemp(dir=self.scratch)
        temp = Path(name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as handle:
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if digest.hexdigest() != sha256:
                raise ArtifactCorrupted(f"blob {sha256} does not match its hash")
            cached.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, cached)
            fsync_directory(cached.parent)
        finally:
            temp.unlink(missing_ok=True)
        return cached

    def _keys(self, under: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(under)):
            for entry in page.get("Contents", []):
                yield entry["Key"]

    def list_blobs(self) -> list[str]:
        return sorted(key.rsplit("/", 1)[-1] for key in self._keys("blobs/"))

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.blob_key(sha256))
        self.cache_path(sha256).unlink(missing_ok=True)

    def put_ref(self, name: str, document: Mapping[str, Any]) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._ref_key(name), Body=encode_ref(document))

    def read_ref(self, name: str) -> dict[str, Any] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._ref_key(name))["Body"]
        except Exception as error:
            if _missing(error):
                return None
            raise
        return decode_ref(name, body.read())

    def list_refs(self) -> list[str]:
        return sorted(key.rsplit("/", 1)[-1].removesuffix(".json") for key in self._keys("refs/"))

    def delete_ref(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._ref_key(name))

    def scope(self, name: str) -> S3ArtifactStore:
        # The read cache is shared: it is keyed by content, whatever namespace the blob came from.
        return S3ArtifactStore(
            self.bucket, self._key(check_name(name)), self.cache_dir, client=self.client, part_size=self.part_size
        )

    def clean_temporary(self) -> int:
        """Clear the local scratch directory, and abort this prefix's multipart uploads abandoned for a day
        (younger ones may belong to another machine still writing)."""
        removed = clean_directory(self.scratch)
        cutoff = datetime.datetime.now(datetime.UTC) - STALE_UPLOAD
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed
