"""KServe v2 over gRPC: `inference.GRPCInferenceService` on its own port (OPENMAAS_GRPC_PORT; off unless set),
a grpc.aio server started and stopped with the app.

The service definitions are the ones Triton's client ships (`tritonclient.grpc.service_pb2[_grpc]`, generated
from Triton's `grpc_service.proto`), so the server and the official clients share one definition. The key
comes as `authorization` metadata (`Bearer <key>`); requests go through the same services as REST (keys,
tenancy, limits, usage, the model's batch queue) and are counted in the same metrics, under the method's
full name. Tensors travel as `raw_input_contents` / `raw_output_contents` (BYTES as u32-LE length + bytes),
or as `contents.bytes_contents` on input. Methods not implemented here answer UNIMPLEMENTED (the base class).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from openmaas.api.deps import Services
from openmaas.api.kserve_v2.serving import Given, V2Models, server_metadata
from openmaas.api.kserve_v2.tensors import IMAGE_INPUT, check_text_input, decode_bytes, split_bytes
from openmaas.api.metrics import RequestSeries
from openmaas.domain.entities import Principal
from openmaas.errors import InvalidRequest, OpenMaaSError, PermissionDenied, status_and_type

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE = "/inference.GRPCInferenceService/"

# The error table's kinds as gRPC status codes.
_CODES = {
    "invalid_request": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.FAILED_PRECONDITION,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unprocessable": grpc.StatusCode.INVALID_ARGUMENT,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, services: Services, series: RequestSeries) -> None:
        self.services = services
        self.models = V2Models(services)
        self.series = series

    async def _call(self, method: str, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]) -> T:
        """Run one call: errors of ours become their gRPC status, and the call is counted in the metrics."""
        started, status = time.perf_counter(), 500
        token = self.series.start()
        try:
            result = await work()
            status = 200
            return result
        except OpenMaaSError as error:
            status = status_and_type(error)[0]
            await context.abort(_CODES[error.kind], error.message)
            raise  # abort raises; this line is for the type checker
        except Exception:
            log.exception("unhandled error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise
        finally:
            self.series.record(SERVICE + method, "GRPC", status, time.perf_counter() - started, token)

    async def _caller(self, context: grpc.aio.ServicerContext, scope: str) -> Principal:
        """The key in the call's `authorization` metadata, counted against its limits like a REST request."""
        metadata = context.invocation_metadata() or ()
        header = next((str(value) for key, value in metadata if key == "authorization"), None)
        auth = self.services.auth
        principal = auth.cached(header)
        if principal is None:
            principal = await asyncio.to_thread(auth.authenticate, header)
        await self.services.limiter.admit_request(principal)
        if not principal.may(scope):
            raise PermissionDenied(f"this API key lacks the {scope!r} scope", code="missing_scope")
        return principal

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=not self.services.inference.backend.stopped())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        metadata = server_metadata()
        return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version, extensions=metadata.extensions)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work() -> Any:
            caller = await self._caller(context, "read")
            return pb.ModelReadyResponse(ready=await self.models.ready(caller, request.name, request.version))

        return await self._call("ModelReady", context, work)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work() -> Any:
            caller = await self._caller(context, "read")
            metadata = await self.models.metadata(caller, request.name, request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=metadata.name,
                versions=metadata.versions,
                platform=metadata.platform,
                inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
                outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
            )

        return await self._call("ModelMetadata", context, work)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work() -> Any:
            caller = await self._caller(context, "infer")
            given = input_of(request)
            wanted = [output.name for output in request.outputs] or None
            name, version = request.model_name, request.model_version
            result = await self.models.infer(caller, name, version, given, wanted, "kserve_v2_grpc")
            tensors = list(result.outputs.values())
            output = pb.ModelInferResponse.InferOutputTensor
            return pb.ModelInferResponse(
                model_name=request.model_name,
                model_version=str(result.version.version),
                id=request.id,
                outputs=[output(name=t.name, datatype=t.datatype, shape=t.shape) for t in tensors],
                raw_output_contents=[t.raw() for t in tensors],
            )

        return await self._call("ModelInfer", context, work)

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work() -> Any:
            caller = await self._caller(context, "admin")
            entries = await asyncio.to_thread(self.models.index, caller, request.ready)
            model = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(
                models=[model(name=e.name, version=e.version or "", state=e.state, reason=e.reason) for e in entries]
            )

        return await self._call("RepositoryIndex", context, work)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work() -> Any:
            await self.models.load(await self._caller(context, "admin"), request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._call("RepositoryModelLoad", context, work)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work() -> Any:
            caller = await self._caller(context, "admin")
            await asyncio.to_thread(self.models.unload, caller, request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._call("RepositoryModelUnload", context, work)


def input_of(request: Any) -> Given:
    """The texts or images of a ModelInferRequest: its one BYTES input, raw or in `contents.bytes_contents`."""
    if len(request.inputs) != 1:
        raise InvalidRequest(f"the request has {len(request.inputs)} inputs; the model takes one, 'text' (BYTES)")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    tensor = request.inputs[0]
    count = check_text_input(tensor.name, tensor.datatype, list(tensor.shape))
    if raw:
        if tensor.name == IMAGE_INPUT:
            return Given(tensor.name, split_bytes(raw[0], count, tensor.name))
        return Given(tensor.name, decode_bytes(raw[0], count, tensor.name))
    elements = list(tensor.contents.bytes_contents)
    if len(elements) != count:
        raise InvalidRequest(f"input {tensor.name!r} has {len(elements)} elements; its shape says {count}")
    if tensor.name == IMAGE_INPUT:
        return Given(tensor.name, [bytes(element) for element in elements])
    try:
        return Given(tensor.name, [element.decode() for element in elements])
    except UnicodeDecodeError:
        raise InvalidRequest(f"input {tensor.name!r}: an element is not UTF-8 text") from None


async def start_grpc(services: Services, series: RequestSeries, host: str, port: int) -> grpc.aio.Server:
    """Serve GRPCInferenceService on host:port; messages up to the REST body limit."""
    limit = services.settings.max_json_body_bytes
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1)]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(services, series), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("KServe v2 gRPC on %s:%d", host, port)
    return server
