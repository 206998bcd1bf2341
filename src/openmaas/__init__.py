"""OpenMaaS: datasets → training jobs → a model registry → inference, as a self-hosted service."""

__version__ = "0.1.0"

from openmaas.sdk import *  # noqa: E402, F403  (the SDK is the package's public surface)
from openmaas.sdk import __all__ as _sdk_all  # noqa: E402

__all__ = [*_sdk_all, "__version__"]
