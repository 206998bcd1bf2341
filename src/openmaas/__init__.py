"""OpenMaaS: datasets → training jobs → a model registry → inference, as a self-hosted service."""

__version__ = "0.1.0"

from openmaas.sdk import APIError, Client  # noqa: E402

__all__ = ["APIError", "Client", "__version__"]
