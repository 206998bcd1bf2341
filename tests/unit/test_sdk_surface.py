"""The SDK's public surface: `__all__` is exactly what it exports (as httpx checks its own), and the async
client has every method of the sync one."""

from __future__ import annotations

import inspect
import types

import openmaas
import openmaas.sdk
from openmaas import APIError, APIStatusError, AsyncClient, Client, NotFoundError, RateLimitError


def public_members(module: types.ModuleType) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    )


def test_all_is_exactly_what_the_sdk_exports() -> None:
    assert public_members(openmaas.sdk) == sorted(openmaas.sdk.__all__)
    assert sorted(openmaas.__all__) == sorted([*openmaas.sdk.__all__, "__version__"])
    for name in openmaas.__all__:
        assert getattr(openmaas, name) is not None


def methods(cls: type) -> dict[str, object]:
    return {name: value for name, value in inspect.getmembers(cls) if not name.startswith("_") and callable(value)}


def test_the_async_client_has_every_method_of_the_sync_one_awaited() -> None:
    sync, asynchronous = methods(Client), methods(AsyncClient)
    assert set(sync) == set(asynchronous)
    for name, method in asynchronous.items():
        parameters = list(inspect.signature(method).parameters)  # type: ignore[arg-type]
        assert parameters == list(inspect.signature(sync[name]).parameters), name  # type: ignore[arg-type]
    for name in ("close", "upload_dataset", "list_datasets", "wait_for_job", "download_artifact", "health"):
        assert inspect.iscoroutinefunction(asynchronous[name]), name  # the one-request routes return awaitables
    for name in ("stream_job_events", "follow_job"):
        assert inspect.isasyncgenfunction(asynchronous[name]), name


def test_errors_form_one_hierarchy_like_the_openai_clients() -> None:
    assert issubclass(NotFoundError, APIStatusError) and issubclass(APIStatusError, APIError)
    assert issubclass(RateLimitError, APIStatusError)
    assert issubclass(openmaas.APIConnectionError, APIError)
    assert issubclass(openmaas.APITimeoutError, openmaas.APIConnectionError)
    assert issubclass(APIError, openmaas.OpenMaaSError)
