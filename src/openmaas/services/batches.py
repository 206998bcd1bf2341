"""OpenAI's batches as a use case: check an input file's lines (by line number) and keep them, then answer them in
the background through the same services as online requests, one at a time, each answer written once; write the
output and error files; cancel. The runner is given `execute`, which answers one request as its route would
(the API layer's, which owns the wire shapes)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from openmaas.domain.entities import Batch, BatchLine, Principal
from openmaas.domain.ids import new_id, now
from openmaas.errors import Conflict, InvalidRequest, NotFound
from openmaas.failpoints import failpoint
from openmaas.services.files import FileService
from openmaas.storage.metadata import MetadataStore
from openmaas.training.executors.owners import is_gone, this_process

log = logging.getLogger(__name__)
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
PREDICT = re.compile(r"^/v1/models/[^/]+(?:/[^/]+)?/predict$")
MAX_LINES = 50_000
WINDOW_S = 24 * 3600.0  # "24h", the one completion window OpenAI offers
MAX_ERRORS = 100  # OpenAI's errors list is for the first bad lines, not all of them
# Generations hold a model's decoding slots for seconds: a batch sends them one at a time. Embeddings and
# predictions go as a group that fills one forward pass (the batch queue's size), once the queue is empty.
GROUPS = {"/v1/chat/completions": 1, "/v1/completions": 1}
GROUP = 32


class Execute(Protocol):
    """Answers one request: (status code, the body its route would answer, or OpenAI's error body); with
    `yield_first`, only once nothing waits in the model's queue (online requests first)."""

    def __call__(
        self, principal: Principal, url: str, body: dict[str, Any], *, yield_first: bool = True
    ) -> Awaitable[tuple[int, dict[str, Any]]]: ...


# Waits until nothing waits in the queue of the model a request names.
WaitIdle = Callable[[Principal, str, dict[str, Any]], Awaitable[None]]


def _line_error(line: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def parse_lines(data: bytes, endpoint: str) -> tuple[list[tuple[int, str, dict[str, Any]]], list[dict[str, Any]]]:
    """(line number, custom_id, body) of each request, and the errors of the bad lines."""
    requests: list[tuple[int, str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_line_error(1, "invalid_file", "the file is not UTF-8")]
    for number, raw in enumerate(text.split("\n"), 1):
        # A file past either bound fails whatever follows: stop reading it, so that a large file of bad or
        # surplus lines costs no more memory than the bounds allow.
        if len(errors) >= MAX_ERRORS:
            break
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as error:
            errors.append(_line_error(number, "invalid_json_line", f"line {number} is not JSON: {error}"))
            continue
        if not isinstance(item, dict):
            errors.append(_line_error(number, "invalid_request", f"line {number} is not a JSON object"))
            continue
        custom_id, method, url, body = item.get("custom_id"), item.get("method"), item.get("url"), item.get("body")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            errors.append(_line_error(number, "missing_custom_id", "custom_id must be a string", "custom_id"))
        elif custom_id in seen:
            errors.append(_line_error(number, "duplicate_custom_id", f"custom_id {custom_id!r} is used twice"))
        elif method != "POST":
            errors.append(_line_error(number, "invalid_method", "method must be POST", "method"))
        elif url != endpoint:
            errors.append(_line_error(number, "mismatched_url", f"url must be the batch's endpoint {endpoint}", "url"))
        elif not isinstance(body, dict):
            errors.append(_line_error(number, "invalid_body", "body must be a JSON object", "body"))
        else:
            seen.add(custom_id)
            requests.append((number, custom_id, body))
            if len(requests) > MAX_LINES:
                errors.append(_line_error(number, "too_many_requests", f"a batch holds at most {MAX_LINES} requests"))
                break
    if not requests and not errors:
        errors.append(_line_error(1, "empty_file", "the input file has no requests"))
    return requests, errors


class BatchService:
    def __init__(self, store: MetadataStore, files: FileService, *, window_s: float = WINDOW_S) -> None:
        self.store = store
        self.files = files
        self.window_s = window_s  # the completion window ("24h"), shorter in tests
        self.on_created: list[Callable[[], None]] = []

    def create(
        self,
        principal: Principal,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> Batch:
        if endpoint not in ENDPOINTS and not PREDICT.match(endpoint):
            known = ", ".join((*ENDPOINTS, "/v1/models/{ref}/predict"))
            raise InvalidRequest(f"unknown endpoint {endpoint!r}; use {known}", param="endpoint")
        if completion_window != "24h":
            raise InvalidRequest("completion_window must be '24h'", param="completion_window")
        file = self.files.get(principal, input_file_id)
        if file.purpose != "batch":
            raise InvalidRequest(
                f"file {input_file_id!r} was uploaded for {file.purpose!r}, not 'batch'",
                param="input_file_id",
                code="invalid_file_purpose",
            )
        _, data = self.files.content(principal, input_file_id)
        requests, errors = parse_lines(data, endpoint)
        batch_id, created = new_id("batch"), now()
        batch = Batch(
            id=batch_id,
            tenant_id=principal.tenant_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status="failed" if errors else "in_progress",
            created_at=created,
            metadata=metadata,
            times={"failed_at": created}
            if errors
            else {"in_progress_at": created, "expires_at": created + self.window_s},
            total=0 if errors else len(requests),
            errors=errors[:MAX_ERRORS] if errors else None,
        )
        lines = [] if errors else [BatchLine(batch_id, n, custom_id, endpoint, body) for n, custom_id, body in requests]
        self.store.batches.add(batch, lines)
        for hook in self.on_created:
            hook()
        return batch

    def get(self, principal: Principal, batch_id: str) -> Batch:
        batch = self.store.batches.get(principal.tenant_id, batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")
        return batch

    def list(self, principal: Principal, *, after: str | None, limit: int) -> tuple[builtins.list[Batch], bool]:
        return self.store.batches.list(principal.tenant_id, after=after, limit=limit)

    def cancel(self, principal: Principal, batch_id: str) -> Batch:
        batch = self.get(principal, batch_id)
        if not self.store.batches.set_status(batch_id, "cancelling", only_from=("validating", "in_progress"), at=now()):
            raise Conflict(f"batch {batch_id!r} is {batch.status}", param="batch_id", code="batch_not_cancellable")
        for hook in self.on_created:
            hook()
        return self.get(principal, batch_id)


class BatchRunner:
    """Answers the active batches' lines in the background, a group at a time, each group going in only once
    the model's queue is empty: a batch holds at most one forward pass (or one generation) ahead of online
    requests, and fills that pass; a restart picks up the lines not yet answered.

    Several processes may share one database: a process answers a batch's lines only while it holds the batch's
    lease (renewed while it works, taken over once expired, or at once from a dead process of this node), so no
    two run one batch. A batch whose completion window passed first ends `expired`: its answers so far go to
    the output and error files, and each request not yet answered to the error file as `batch_expired`."""

    def __init__(
        self,
        store: MetadataStore,
        files: FileService,
        execute: Execute,
        *,
        wait_idle: WaitIdle | None = None,
        idle_s: float = 1.0,
        node: str = "localhost",
        lease_s: float = 30.0,
    ) -> None:
        self.store = store
        self.files = files
        self.execute = execute
        self.wait_idle = wait_idle
        self.idle_s = idle_s
        self.node = node
        self.owner = this_process(node)
        self.lease_s = lease_s
        self._wake = asyncio.Event()

    def _claim(self, batch_id: str) -> bool:
        if self.store.batches.claim(batch_id, self.owner, self.lease_s):
            return True
        holder = self.store.batches.owner_of(batch_id)
        return is_gone(holder, self.node) and self.store.batches.claim(
            batch_id, self.owner, self.lease_s, take_from=holder
        )

    async def _renew(self, batch_id: str) -> None:
        """Keep the lease while a line is answered (a long generation must not let another process take over)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await asyncio.to_thread(self.store.batches.claim, batch_id, self.owner, self.lease_s)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            worked = False
            try:
                active = await asyncio.to_thread(self.store.batches.active)
            except Exception:  # our bug (or the database gone), logged; tried again after a pause
                log.exception("listing the active batches failed")
                active = []
            for batch in active:
                # One batch's failure never holds up the others (of this tenant or another): it is logged and
                # tried again on the next round.
                try:
                    worked = await self._advance(batch) or worked
                except Exception:
                    log.exception("advancing batch %s failed", batch.id)
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_s)
                self._wake.clear()

    async def _advance(self, batch: Batch) -> bool:
        if not await asyncio.to_thread(self._claim, batch.id):
            return False  # another process runs it
        expires = batch.times.get("expires_at", batch.created_at + WINDOW_S)
        if batch.status == "in_progress" and now() >= expires:
            await asyncio.to_thread(self._finish, batch, "expired")
            return True
        if batch.status == "cancelling":
            await asyncio.to_thread(self._finish, batch, "cancelled")
            return True
        if batch.status == "finalizing":
            await asyncio.to_thread(self._finish, batch, "completed")
            return True
        group = GROUPS.get(batch.endpoint, GROUP) if self.wait_idle is not None else 1
        pending = await asyncio.to_thread(self.store.batches.pending, batch.id, max(group, 8))
        if not pending:
            await asyncio.to_thread(
                self.store.batches.set_status, batch.id, "finalizing", only_from=("in_progress",), at=now()
            )
            return True
        tenant = await asyncio.to_thread(self.store.tenants.get, batch.tenant_id)
        limits = tenant.limits if tenant is not None else {}
        principal = Principal(
            tenant_id=batch.tenant_id, key_id="batch", scopes=frozenset({"infer"}), tenant_limits=limits
        )
        renewing = asyncio.create_task(self._renew(batch.id))
        try:
            for start in range(0, len(pending), group):
                if now() >= expires:
                    break  # the next round ends it as expired
                lines = pending[start : start + group]
                if self.wait_idle is not None and group > 1:
                    # The group goes in together, behind nothing: one forward pass, then online requests again.
                    await self.wait_idle(principal, lines[0].url, lines[0].body)
                    await asyncio.gather(*(self._answer(principal, batch, line, yield_first=False) for line in lines))
                else:
                    await self._answer(principal, batch, lines[0], yield_first=True)
                current = await asyncio.to_thread(self.store.batches.get, None, batch.id)
                if current is None or current.status != "in_progress":
                    break  # cancelled meanwhile: the next round finishes it
        finally:
            renewing.cancel()
        return True

    async def _answer(self, principal: Principal, batch: Batch, line: BatchLine, *, yield_first: bool) -> None:
        status, body = await self.execute(principal, line.url, line.body, yield_first=yield_first)
        await asyncio.to_thread(self.store.batches.answer, batch.id, line.line, status, body)
        failpoint("batch_after_answer")

    def _finish(self, batch: Batch, final: str) -> None:
        """Write the output (2xx answers) and error files in OpenAI's shape and end the batch."""
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for line in self.store.batches.lines(batch.id):
            if line.status_code is None:
                if final == "expired":
                    errors.append(
                        {
                            "id": f"batch_req_{batch.id}_{line.line}",
                            "custom_id": line.custom_id,
                            "response": None,
                            "error": {
                                "code": "batch_expired",
                                "message": "This request could not be executed before the completion window expired.",
                            },
                        }
                    )
                continue
            entry = {
                "id": f"batch_req_{batch.id}_{line.line}",
                "custom_id": line.custom_id,
                "response": {
                    "status_code": line.status_code,
                    "request_id": f"{batch.id}-{line.line}",
                    "body": line.response,
                },
                "error": None,
            }
            (output if line.status_code < 300 else errors).append(entry)
        # Written for the tenant and counted in its stored bytes, but not refused by its storage quota: the
        # answers were already paid for (the next upload is refused instead).
        owner = Principal(tenant_id=batch.tenant_id, key_id="batch", tenant_limits={})
        ids: dict[str, str | None] = {"output_file_id": None, "error_file_id": None}
        for key, entries, name in (("output_file_id", output, "output"), ("error_file_id", errors, "errors")):
            if entries:
                data = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries)
                ids[key] = self.files.write(
                    owner, filename=f"{batch.id}_{name}.jsonl", purpose="batch_output", data=data
                ).id
        only_from = {"cancelled": ("cancelling",), "expired": ("in_progress",)}.get(final, ("finalizing",))
        self.store.batches.set_status(batch.id, final, only_from=only_from, at=now(), **ids)
