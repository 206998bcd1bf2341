"""The Python SDK: `openmaas.Client(base_url, api_key)` over httpx."""

from openmaas.sdk.client import APIError, Client

__all__ = ["APIError", "Client"]
