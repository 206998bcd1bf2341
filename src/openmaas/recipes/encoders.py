"""Transformer sentence encoders: fast tokenization, mean pooling, heads, and export to ONNX.

Shared by the `sentence-embedding` and `transformer-classifier` recipes. Loading is offline only
(HF_HUB_OFFLINE=1, local directories), and no remote code is ever trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from openmaas.recipes.base import InputTooLong

if TYPE_CHECKING:
    from transformers import PreTrainedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Batch:
    """Token ids as numpy arrays (what ONNX Runtime takes) plus the token count of each input."""

    arrays: dict[str, np.ndarray]
    token_counts: list[int]

    def tensors(self, device: str) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(array).to(device) for name, array in self.arrays.items()}


def read_max_length(directory: Path) -> int:
    """sentence-transformers' max_seq_length when present (so we embed exactly as it does), else the config's."""
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        return int(json.loads(st_config.read_text())["max_seq_length"])
    config = json.loads((directory / "config.json").read_text())
    return int(min(config.get("max_position_embeddings", 512), 512))


class TextTokenizer:
    """A fast `tokenizers` tokenizer, truncating and padding to the longest input of a batch."""

    def __init__(self, directory: Path, max_length: int, uses_token_types: bool) -> None:
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no tokenizer.json (a fast tokenizer is required)")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.max_length = max_length
        self.uses_token_types = uses_token_types
        self.tokenizer.enable_truncation(max_length)
        pad_id = self.tokenizer.padding["pad_id"] if self.tokenizer.padding else 0
        pad_token = self.tokenizer.id_to_token(pad_id) or "[PAD]"
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, direction="right")
        self._untruncated: Any = None

    def __call__(self, texts: list[str], *, truncate: bool = True) -> Batch:
        encodings = self.tokenizer.encode_batch(texts)
        if not truncate:
            for index, encoding in enumerate(encodings):
                if encoding.overflowing:
                    raise InputTooLong(index, self.full_length(texts[index]), self.max_length)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if self.uses_token_types:
            arrays["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return Batch(arrays, [int(sum(e.attention_mask)) for e in encodings])

    def full_length(self, text: str) -> int:
        """The text's token count without truncation (the tokenizer above truncates every encoding): built on
        the first refusal only, so serving never pays for a second tokenizer."""
        if self._untruncated is None:
            from tokenizers import Tokenizer

            untruncated = Tokenizer.from_str(self.tokenizer.to_str())
            untruncated.no_truncation()
            untruncated.no_padding()
            self._untruncated = untruncated
        return len(self._untruncated.encode(text, add_special_tokens=True).ids)

    def count(self, texts: list[str]) -> list[int]:
        return self(texts).token_counts


def chunk_size(device: str) -> int:
    """How many texts one forward pass takes inside a batch; 1 means "as `in_token_groups` plans". On a CPU,
    padding texts to a common length costs more than it saves (measured with MiniLM on real SMS texts: one
    text a call 197 texts/s, length-sorted chunks of 32 160/s, unsorted 32 70/s), so passes group texts of
    close token counts only; a GPU wants chunks of 32."""
    return 1 if device == "cpu" else 32


def onnx_threads(device: str) -> int:
    """ONNX Runtime threads per call. On a CPU a batch's passes run one per core at once (`in_token_groups`),
    so each call gets one thread: no thread wakes another for every operator. Measured with MiniLM on 2 cores
    and real SMS texts: 2 calls at once with 1 thread each 280 texts/s at 6.7 ms of CPU a text; with 2
    threads each 240 texts/s at 8 ms. A lone text with the cores to itself runs on `OnnxRunner`'s second
    session, with a thread per core (one call alone: 160-190 texts/s with 2 threads, 125-165 with 1)."""
    return 1 if device == "cpu" else os.cpu_count() or 1


def concurrent_batches(device: str) -> int:
    """Batches a server should run at once. On a CPU a batch's texts run on a thread per core, and a second
    batch keeps the cores busy while the first waits for its last texts (MiniLM behind HTTP on 2 cores, one
    run: 207 requests/s with two batches at once and 180 with one at 8 clients, 219 and 211 at 32); a GPU
    runs one at a time."""
    return 2 if device == "cpu" else 1


@functools.cache
def _chunk_helpers() -> tuple[ThreadPoolExecutor, int]:
    count = max(1, (os.cpu_count() or 1) - 1)  # with the caller, one thread per core
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="chunk"), count


def _in_order(parts: list[Callable[[], np.ndarray]], order: np.ndarray) -> np.ndarray:
    """Run the parts (the runtimes release the GIL) and put their concatenated rows back in input order.

    Small forward passes leave cores idle; the caller and a helper thread per other core take parts in turn
    until none is left: one hand-off per helper and call, not one per part (MiniLM, 32 texts a call, 2 cores,
    one of them busy with another process: 265 texts/s, against 142 with each part handed to a pool of two
    threads)."""
    results: dict[int, np.ndarray] = {}
    indices = iter(range(len(parts)))
    taking = threading.Lock()

    def take_parts() -> None:
        while True:
            with taking:
                index = next(indices, None)
            if index is None:
                return
            results[index] = parts[index]()

    helpers, count = _chunk_helpers()
    started = [helpers.submit(take_parts) for _ in range(min(count, len(parts) - 1))]
    try:
        take_parts()
    finally:
        for helper in started:
            if not helper.cancel():  # one still queued behind another caller's parts has nothing left to do
                helper.result()
    ordered = np.concatenate([results[index] for index in range(len(parts))])
    out = np.empty_like(ordered)
    out[order] = ordered
    return out


def in_length_buckets(texts: list[str], run: Any, size: int = 8) -> np.ndarray:
    """Run `run(chunk) -> array` on chunks of similar length and restore the input order.

    One big batch pads every text to the longest one; sorted chunks spend almost nothing on padding.
    """
    if len(texts) <= size:
        result: np.ndarray = run(texts)
        return result
    order = np.argsort([len(text) for text in texts], kind="stable")
    chunks = [[texts[i] for i in order[start : start + size]] for start in range(0, len(texts), size)]
    return _in_order([functools.partial(run, chunk) for chunk in chunks], order)


# What one forward pass costs beyond its tokens, in tokens. MiniLM on one core of this project's VM, n inputs of
# L tokens: a pass takes ≈ 2.5 ms + 0.23 ms × n × L (4.4 ms for 1 × 8 tokens, 30.7 ms for 16 × 8, 117 ms for 16 × 32),
# the fixed part mostly streaming the weights (43 MB, more than the L3 cache) once per pass. So padding a
# shorter input by a few tokens is cheaper than a pass of its own.
PASS_OVERHEAD_TOKENS = 11


def plan_token_groups(counts: Sequence[int], limit: int = 32, overhead: int = PASS_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split inputs into forward passes of at most `limit`, at the least estimated cost, largest pass first.

    Inputs sorted by token count; a pass costs `overhead + rows × its longest input` tokens (the shorter ones
    are padded). Over the sorted order the cheapest split into consecutive passes is a small dynamic program:
    equal counts always share a pass, and inputs a few tokens apart share one when that saves a pass's
    overhead. The costliest pass comes first, so that the passes the cores take in turn end close together."""
    order = sorted(range(len(counts)), key=counts.__getitem__)
    best = [0] * (len(order) + 1)  # best[i]: the cheapest plan for the i shortest inputs
    start = [0] * (len(order) + 1)  # where that plan's last pass starts
    for end in range(1, len(order) + 1):
        longest = counts[order[end - 1]]
        best[end], start[end] = min(
            (best[first] + overhead + (end - first) * longest, first) for first in range(max(0, end - limit), end)
        )
    groups, end = [], len(order)
    while end:
        groups.append(order[start[end] : end])
        end = start[end]
    groups.sort(key=lambda rows: len(rows) * counts[rows[-1]], reverse=True)
    return groups


class _CoreShares:
    """How many batches are in `in_token_groups` at once: each one plans for its share of the cores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches = 0

    @contextlib.contextmanager
    def share(self) -> Iterator[int]:
        with self._lock:
            self._batches += 1
            cores = max(1, (_chunk_helpers()[1] + 1) // self._batches)
        try:
            yield cores
        finally:
            with self._lock:
                self._batches -= 1


_core_shares = _CoreShares()


# Hands (input positions, their rows of the result) back as each forward pass ends; called from the pass's thread.
OnPart = Callable[[Sequence[int], np.ndarray], None]


def in_token_groups(
    batch: Batch,
    run: Callable[[Batch], np.ndarray],
    limit: int = 32,
    alone: Callable[[Batch], np.ndarray] | None = None,
    on_part: OnPart | None = None,
) -> np.ndarray:
    """Run `run(group) -> array` on the passes `plan_token_groups` chooses, cut to their longest input, on
    the caller and helper threads, and restore the input order.

    For a CPU, where padding a whole batch to its longest input costs more than it saves, and a pass per
    input pays the per-pass cost every time (MiniLM on 2 cores, real SMS texts: 276 texts/s at 32 a call
    with this plan, 248 with passes of equal token counts only; 315 and 301 at 256 a call). A batch is cut
    into at least one pass per core it has to itself, so that every core has work (served at 32 clients: 256
    requests/s against 238 when the plan alone decides, and a p99 of 200 ms against 420); while a server runs
    two batches at once, each has half the cores and cuts fewer, larger passes (3-4% less CPU a request).
    A lone input with every core to itself goes to `alone` (a runner with a thread per core) when given.
    `on_part`, when given, gets each pass's rows as the pass ends (a server answers their requests at once)."""
    counts = batch.token_counts
    with _core_shares.share() as cores:
        if len(counts) == 1:
            result = alone(batch) if alone is not None and cores > 1 else run(batch)
            if on_part is not None:
                on_part([0], result)
            return result
        groups = plan_token_groups(counts, min(limit, -(-len(counts) // cores)))

        def run_group(rows: list[int]) -> np.ndarray:
            length = max(counts[row] for row in rows)  # padding is on the right: the first `length` columns
            arrays = {name: array[rows, :length] for name, array in batch.arrays.items()}
            result = run(Batch(arrays, [counts[row] for row in rows]))
            if on_part is not None:
                on_part(rows, result)
            return result

        order = np.fromiter((row for rows in groups for row in rows), dtype=np.int64, count=len(counts))
        return _in_order([functools.partial(run_group, rows) for rows in groups], order)


def load_encoder(directory: Path) -> PreTrainedModel:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(directory), trust_remote_code=False, local_files_only=True)
    return model.eval()


def accepts_token_types(encoder: nn.Module) -> bool:
    return "token_type_ids" in inspect.signature(encoder.forward).parameters


class SentenceEncoder(nn.Module):
    """Encoder → mean pooling over real tokens → L2 normalisation (the all-MiniLM-L6-v2 recipe)."""

    def __init__(self, encoder: PreTrainedModel, uses_token_types: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.uses_token_types = uses_token_types

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if self.uses_token_types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)

    @property
    def dimensions(self) -> int:
        return int(self.encoder.config.hidden_size)


class ClassifierHead(nn.Module):
    def __init__(self, dimensions: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dimensions, classes)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)


class EncoderClassifier(nn.Module):
    """Sentence encoder + linear head; `probabilities=True` adds the softmax (for serving and export)."""

    def __init__(self, sentence: SentenceEncoder, head: ClassifierHead, probabilities: bool = False) -> None:
        super().__init__()
        self.sentence = sentence
        self.head = head
        self.probabilities = probabilities

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.head(self.sentence(input_ids, attention_mask, token_type_ids))
        return torch.softmax(logits, dim=1) if self.probabilities else logits


def export_onnx(module: nn.Module, uses_token_types: bool, output_name: str, path: Path) -> None:
    """Trace `module` to ONNX with dynamic batch and sequence axes, its weights in `data_file(path)`.

    ONNX Runtime maps weights kept beside the graph instead of copying them into each session: a session of
    MiniLM takes 53 MB of resident memory instead of 128 (the embedding table is read only where texts touch
    it), and a second session on the same weights 43 MB more. Written atomically: the weights first, then the
    graph that refers to them."""
    import onnx

    names = list(INPUT_NAMES if uses_token_types else INPUT_NAMES[:2])
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    axes: dict[str, Any] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output_name] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as temporary:
        traced = Path(temporary) / "traced.onnx"
        # The tracer warns about Python branches in transformers' mask code; the test against PyTorch on
        # padded batches of real sentences is what shows the graph is right.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                example,
                str(traced),
                input_names=names,
                output_names=[output_name],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        _save_with_data_file(onnx.load(str(traced)), path, Path(temporary))


def data_file(path: Path) -> Path:
    """Where the weights of the graph at `path` are kept."""
    return path.with_name(path.name + ".data")


def _save_with_data_file(model: Any, path: Path, staging: Path) -> None:
    import onnx

    staged = staging / path.name
    onnx.save_model(
        model,
        str(staged),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_file(path).name,
        size_threshold=1024,
    )
    os.replace(staging / data_file(path).name, data_file(path))
    os.replace(staged, path)


def with_data_file(path: Path) -> None:
    """Move the weights of a graph exported with them inside (by an earlier release) into `data_file(path)`,
    and delete the mapped copy that release kept beside it. Decided by what the graph holds, not by whether a
    data file exists: a crash between writing the data and the graph leaves the old graph and a new data file."""
    if not path.is_file():
        return
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph = onnx.load(str(path), load_external_data=False)
    if any(uses_external_data(tensor) for tensor in graph.graph.initializer):
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as temporary:
        _save_with_data_file(graph, path, Path(temporary))
    legacy = path.with_name(path.stem + ".external.onnx")
    data_file(legacy).unlink(missing_ok=True)
    legacy.unlink(missing_ok=True)


def single_file(path: Path, target: Path) -> Path:
    """The graph at `path` with its weights inside it, one self-contained file (what a download gets), made
    once at `target` and written atomically."""
    if target.is_file() and target.stat().st_mtime >= path.stat().st_mtime:
        return target
    import onnx

    model = onnx.load(str(path))  # with the weights of its data file
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        onnx.save_model(model, temp)
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)
    return target


ONNX_RUNTIMES = ("onnx", "onnx-int8")  # a version's runtime: fp32 weights, or its linear layers' weights in int8


def with_int8_weights(path: Path) -> Path:
    """A copy of the graph at `path` whose MatMul weights are int8 (per output channel; activations are
    quantized on the fly), made once beside it with its own data file, and written atomically.

    The layers' weights shrink 4 times (MiniLM: 42 MB to 11 MB, inside the L3 cache) and run on the CPU's
    integer dot-product instructions: measured with MiniLM on 2 cores and real SMS texts, 740-780 texts/s
    at 256 a call instead of 330, and 4.1 ms of CPU a lone text instead of 9.4. The answers move a little
    (on 3,000 SMS texts: the same label for 99.7%, mean |Δp| 0.005), so a version opts in to it."""
    target = path.with_name(path.stem + ".int8.onnx")
    if target.is_file() and target.stat().st_mtime >= path.stat().st_mtime:
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet_quantizer()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".int8-") as temporary:
        staged = Path(temporary) / target.name
        quantize_dynamic(
            str(path),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],  # the embedding table stays float: it is read a row at a time
            extra_options={"MatMulConstBOnly": True},
            use_external_data_format=True,  # into data_file(staged): mapped, like the float graph's
        )
        os.replace(data_file(staged), data_file(target))
        os.replace(staged, target)
    return target


@functools.cache
def _quiet_quantizer() -> None:
    """The quantizer warns on the root logger that a graph could be pre-processed first; this one need not be."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname

    logging.getLogger().addFilter(keep)


class OnnxRunner:
    """ONNX Runtime sessions fed with the tokenizer's numpy arrays: one with `threads` threads per call, and,
    when `alone_threads` is more, a second one on the same weights (mapped from the graph's data file when it
    has one) for a pass that has the cores to itself (a lone MiniLM text of 16 tokens: 4.8 ms with two threads
    against 5.6 ms with one; 32 tokens: 7.4 against 9.5)."""

    def __init__(self, path: Path, threads: int = 1, alone_threads: int | None = None) -> None:
        import onnxruntime as ort

        def session(count: int) -> Any:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = count
            # Idle intra-op threads sleep instead of spinning: in a server the spinning steals the cores that
            # parse requests and tokenize the next batch.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self.session = session(threads)
        self.alone_session = session(alone_threads) if alone_threads and alone_threads > threads else self.session
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Batch) -> np.ndarray:
        result: np.ndarray = self.session.run(None, {name: batch.arrays[name] for name in self.inputs})[0]
        return result

    def alone(self, batch: Batch) -> np.ndarray:
        result: np.ndarray = self.alone_session.run(None, {name: batch.arrays[name] for name in self.inputs})[0]
        return result


class ServedGraph:
    """A module served from a batch of token arrays: through ONNX Runtime (exported once to `onnx_path`,
    then reused; with int8 weights for `onnx-int8`) when the runtime is one of ONNX_RUNTIMES, else through
    PyTorch on `device`. `self.onnx_path` is the graph served (`single_file` makes a download of it)."""

    def __init__(
        self, module: nn.Module, uses_token_types: bool, output_name: str, runtime: str, device: str, onnx_path: Path
    ) -> None:
        self.device = device
        self.onnx: OnnxRunner | None = None
        self.onnx_path: Path | None = None
        self.torch_module: nn.Module | None = None
        if runtime in ONNX_RUNTIMES:
            # Two versions of one artifact (say float and int8) may load at once, in threads or processes:
            # a graph and its data file are written by one of them at a time.
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            with onnx_path.with_name(onnx_path.name + ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                with_data_file(onnx_path)
                if not onnx_path.is_file():
                    export_onnx(module, uses_token_types, output_name, onnx_path)
                served = with_int8_weights(onnx_path) if runtime == "onnx-int8" else onnx_path
            alone_threads = os.cpu_count() if device == "cpu" else None
            self.onnx, self.onnx_path = OnnxRunner(served, onnx_threads(device), alone_threads), served
            self.memory_bytes = served.stat().st_size + data_file(served).stat().st_size
        else:
            self.torch_module = module.to(device).eval()
            self.memory_bytes = memory_bytes(module)

    def __call__(self, batch: Batch) -> np.ndarray:
        if self.onnx is not None:
            return self.onnx(batch)
        assert self.torch_module is not None
        with torch.inference_mode():
            result: np.ndarray = self.torch_module(**batch.tensors(self.device)).cpu().numpy()
        return result

    def alone(self, batch: Batch) -> np.ndarray:
        """A pass with every core to itself (a lone input and no other batch running)."""
        return self.onnx.alone(batch) if self.onnx is not None else self(batch)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def memory_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())
