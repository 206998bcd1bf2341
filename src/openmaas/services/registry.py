"""Model registry use cases: list, show, resolve references, aliases, and deleting versions."""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from openmaas.domain.entities import SYSTEM_TENANT, ModelVersion, Principal, RegisteredModel
from openmaas.domain.refs import (
    CHECKPOINT_PREFIX,
    FINE_TUNED_PREFIX,
    ModelRef,
    fine_tuned_model_id,
    is_valid_alias,
    is_valid_name,
    parse_ref,
)
from openmaas.errors import InvalidRequest, NotFound, PermissionDenied, Unprocessable
from openmaas.recipes import get_loader
from openmaas.recipes.foundation import FOUNDATION_MODELS
from openmaas.recipes.generative import NotACausalLM, inspect_causal_lm, is_causal_lm, load_causal_lm
from openmaas.recipes.gguf import GGUF_FILE
from openmaas.services.foundation import safetensors_parameters, store_files
from openmaas.services.gguf_models import check_gguf, check_gguf_loads, gguf_version_spec, is_gguf_path
from openmaas.storage.artifacts import ArtifactStore, manifest_sha256
from openmaas.storage.metadata import MetadataStore


def parse(ref: str) -> ModelRef:
    parsed = parse_ref(ref)
    if parsed is None:
        raise InvalidRequest(
            f"invalid model reference {ref!r}: use 'name', 'name:VERSION' or 'name:ALIAS', "
            "each optionally as 'owner/name…' for another tenant's public model",
            param="model",
            code="invalid_model_reference",
        )
    return parsed


def did_you_mean(name: str, readable: list[str]) -> list[str]:
    """The readable names a caller most likely meant by `name`: another tenant's public model of that very name
    (`default/spam` for `spam`), else the closest spellings. None when `name` itself is readable (then the
    version or alias was what did not match)."""
    if name in readable:
        return []
    same = [candidate for candidate in readable if candidate.rpartition("/")[2] == name.rpartition("/")[2]]
    return same[:3] or difflib.get_close_matches(name, readable, n=3)


def reference_for(principal: Principal, model: RegisteredModel) -> str:
    """How the caller writes the model: bare for its own and foundation models, `owner/name` for others'."""
    if model.tenant_id in (principal.tenant_id, SYSTEM_TENANT):
        return model.name
    return f"{model.owner}/{model.name}"


def name_for(principal: Principal, version: ModelVersion, ref: str) -> str:
    """`version`'s model as the caller writes it (see `reference_for`), given the reference it resolved from.

    A version carries no owner's name, and needs none: a bare reference only reaches the caller's own and
    foundation models, so another tenant's model was necessarily written `owner/name[:…]`."""
    if version.tenant_id in (principal.tenant_id, SYSTEM_TENANT):
        return version.model
    return ref.partition(":")[0]


class RegistryService:
    def __init__(self, store: MetadataStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts
        # Called with each version that stops existing, so a serving pool can drop it.
        self.on_version_deleted: list[Callable[[ModelVersion], None]] = []
        # Called after any change to what a reference resolves to (aliases, deletions, imports).
        self.on_change: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def list(self, principal: Principal) -> list[RegisteredModel]:
        own = self.store.models.list(principal.tenant_id)
        names = {m.name for m in own}
        shared = [m for m in self.store.models.list(SYSTEM_TENANT) if m.name not in names]
        return shared + own + self.store.models.public_of_others(principal.tenant_id)

    def get(self, principal: Principal, name: str) -> RegisteredModel:
        """`owner/name` if the caller may see it; a bare name is the caller's own model, else a foundation model.

        A bare name never reaches another tenant's public model: publishing `spam` must not change what
        `spam` means to a tenant that has none of its own yet."""
        owner, _, bare = name.rpartition("/")
        if owner:
            model = self.store.models.visible(principal.tenant_id, owner, bare)
        else:
            model = self.store.models.get(principal.tenant_id, name) or self.store.models.get(SYSTEM_TENANT, name)
        if model is None:
            raise self._not_found(principal, name, f"no model {name!r}")
        return model

    def resolve(self, principal: Principal, ref: str) -> ModelVersion:
        if ref.startswith(FINE_TUNED_PREFIX):
            return self._fine_tuned(principal, ref)
        parsed = parse(ref)
        version = self.store.models.resolve(principal.tenant_id, parsed)
        if version is None and parsed.owner is None:
            version = self.store.models.resolve(SYSTEM_TENANT, parsed)
        if version is None:
            written = f"{parsed.owner}/{parsed.name}" if parsed.owner is not None else parsed.name
            raise self._not_found(principal, written, f"no model version matches {ref!r}")
        return version

    def _fine_tuned(self, principal: Principal, ref: str) -> ModelVersion:
        """The version an OpenAI fine-tuning job of the caller's tenant trained (`ft:{base}:{tenant}:{suffix}:{job}`,
        exactly as the job shows it), or one of its checkpoints (`…:{job}:ckpt-step-{N}`, registered when the job
        succeeded; the last step is the job's own version)."""
        stem, _, last = ref.rpartition(":")
        step = None
        if last.startswith(CHECKPOINT_PREFIX):
            digits = last.removeprefix(CHECKPOINT_PREFIX)
            if digits.isascii() and digits.isdigit() and len(digits) <= 12:
                step = int(digits)
                ref, last = stem, stem.rpartition(":")[2]
        job_id = last
        job = self.store.jobs.get(principal.tenant_id, job_id)
        fine_tune = self.store.fine_tunes.get(principal.tenant_id, job_id)
        tenant = self.store.tenants.get(principal.tenant_id)
        version = None
        if job is not None and fine_tune is not None and tenant is not None and job.model_version is not None:
            named = fine_tuned_model_id(fine_tune.base_model, tenant.name, fine_tune.suffix, job_id)
            if ref == named and (step is None or step == job.metrics.get("steps")):
                version = self.store.models.resolve(principal.tenant_id, parse(f"{job.model}:{job.model_version}"))
            elif ref == named:
                model = self.store.models.get(principal.tenant_id, job.model)
                found = [v for v in (model.versions if model else ()) if v.metrics.get("checkpoint_step") == step]
                version = found[0] if found else None
        if version is not None:
            return version
        raise NotFound(f"no fine-tuned model {ref!r}", param="model", code="model_not_found")

    def _not_found(self, principal: Principal, name: str, message: str) -> NotFound:
        """A 404 that suggests the models the caller may read whose names are close to `name` (only on this
        path: listing the readable models costs queries a found model never pays)."""
        readable = [reference_for(principal, model) for model in self.list(principal)]
        close = did_you_mean(name, readable)
        if close:
            message += "; did you mean " + " or ".join(repr(candidate) for candidate in close) + "?"
        return NotFound(message, param="model", code="model_not_found")

    def set_public(self, principal: Principal, name: str, public: bool) -> RegisteredModel:
        """Let every tenant read, serve and build on the caller's own model (or stop): never change it."""
        if not self.store.models.set_public(principal.tenant_id, name, public):
            raise NotFound(f"no model {name!r}", param="model", code="model_not_found")
        self.store.audit.record(principal.tenant_id, principal.key_id, "model.update", name, {"public": public})
        self._changed()  # other tenants' remembered resolutions must not outlive a switch to private
        return self.get(principal, name)

    def set_alias(self, principal: Principal, name: str, alias: str, version: int) -> RegisteredModel:
        if not is_valid_alias(alias):
            raise InvalidRequest(
                f"invalid alias {alias!r}: a letter, then letters, digits, '_' or '-' ('latest' is reserved)",
                param="alias",
                code="invalid_alias",
            )
        if not self.store.models.set_alias(principal.tenant_id, name, alias, version):
            raise NotFound(f"model {name!r} has no version {version}", param="version", code="model_not_found")
        self._changed()
        return self.get(principal, name)

    def delete_alias(self, principal: Principal, name: str, alias: str) -> RegisteredModel:
        if not self.store.models.delete_alias(principal.tenant_id, name, alias):
            raise NotFound(f"model {name!r} has no alias {alias!r}", param="alias", code="alias_not_found")
        self._changed()
        return self.get(principal, name)

    def delete_version(self, principal: Principal, name: str, version: int) -> ModelVersion:
        deleted = self.store.models.delete_version(principal.tenant_id, name, version)
        if deleted is None:
            raise NotFound(f"model {name!r} has no version {version}", param="version", code="model_not_found")
        self.store.audit.record(principal.tenant_id, principal.key_id, "model.version.delete", f"{name}:{version}", {})
        self._forget(deleted)
        return deleted

    def import_directory(self, principal: Principal, path: str, name: str, runtime: str | None = None) -> ModelVersion:
        """Register a local Hugging Face directory (an encoder, a causal LM, or an image classifier with its
        preprocessor_config.json) as a new version of `name` (admin only). It is loaded once before
        registration, so a version that registers also serves. An encoder is served with `runtime` (`onnx`
        unless given); a causal LM and an image classifier with PyTorch."""
        if not principal.is_admin:
            raise PermissionDenied("importing a model from the server's disk needs an admin key")
        if not is_valid_name(name) or name in FOUNDATION_MODELS:
            raise InvalidRequest(f"invalid or reserved model name {name!r}", param="name", code="invalid_model_name")
        if not Path(path).is_absolute():
            refuse_relative(path)  # as written: Path("./x") would read as "x", a Hub id's shape
        if is_gguf_path(Path(path)):
            return self._import_gguf(principal, Path(path), name, runtime)
        directory = Path(path)
        task = check_importable(directory)
        if task != "embeddings" and runtime is not None:
            what = "a causal LM" if task == "text-generation" else "an imported image classifier"
            raise InvalidRequest(
                f"{what} is served with PyTorch; runtime {runtime!r} is for encoders",
                param="runtime",
                code="invalid_runtime",
            )
        with tempfile.TemporaryDirectory(dir=self.artifacts.scratch) as scratch:
            files = store_files(self.artifacts, directory)
            staged = self.artifacts.materialize(files, Path(scratch) / "model")
            try:
                metrics, labels = _imported_metrics(task, staged)
            except Exception as error:  # whatever the directory holds, the answer is "cannot load it"
                raise Unprocessable(
                    f"the model cannot be loaded: {type(error).__name__}: {error}",
                    param="path",
                    code="invalid_model_directory",
                ) from None
        registered = self.store.models.register_version(
            {
                "tenant_id": principal.tenant_id,
                "model": name,
                "task": task,
                "recipe": IMPORTED_RECIPES[task],
                "runtime": "onnx" if task == "embeddings" and runtime is None else runtime or "torch",
                "labels": labels,
                "metrics": metrics,
                "hyperparameters": {"imported_from": str(directory)},
                "dataset_id": None,
                "dataset_sha256": None,
                "job_id": None,
                "parameter_count": safetensors_parameters(directory),
                "artifact_sha256": manifest_sha256(files),
                "files": files,
            }
        )
        self._changed()
        return registered

    def _import_gguf(self, principal: Principal, path: Path, name: str, runtime: str | None) -> ModelVersion:
        """A `.gguf` file, as `ollama create` takes one: its metadata read, loaded once by the OpenVINO engine,
        and registered as a text-generation version served from the file as it is."""
        if runtime is not None:
            raise InvalidRequest(
                f"a GGUF model is served by the OpenVINO engine; runtime {runtime!r} is for encoders",
                param="runtime",
                code="invalid_runtime",
            )
        info = check_gguf(path)
        with tempfile.TemporaryDirectory(dir=self.artifacts.scratch) as scratch:
            files = {GGUF_FILE: self.artifacts.put_file(path)}
            staged = self.artifacts.materialize(files, Path(scratch) / "model")
            check_gguf_loads(staged / GGUF_FILE)
        spec = gguf_version_spec(principal.tenant_id, name, info, files, {"imported_from": str(path)})
        registered = self.store.models.register_version(spec)
        self._changed()
        return registered

    def delete_model(self, principal: Principal, name: str) -> RegisteredModel:
        deleted = self.store.models.delete_model(principal.tenant_id, name)
        if deleted is None:
            raise NotFound(f"no model {name!r}", param="model", code="model_not_found")
        self.store.audit.record(
            principal.tenant_id,
            principal.key_id,
            "model.delete",
            name,
            {"versions": [v.version for v in deleted.versions]},
        )
        for version in deleted.versions:
            self._forget(version)
        return deleted

    def _forget(self, version: ModelVersion) -> None:
        self._changed()
        for callback in self.on_version_deleted:
            callback(version)
        # Only the blobs no other version lists: two versions with different manifests may share a tokenizer's
        # or a base model's files.
        blobs = set(version.files.values())
        for sha256 in blobs - self.store.models.blobs_in_use(blobs):
            self.artifacts.delete(sha256)


def _imported_metrics(task: str, directory: Path) -> tuple[dict[str, Any], list[str]]:
    """Load the staged copy once (the proof it serves) and describe it; also a classifier's labels."""
    if task == "text-generation":
        model = load_causal_lm(directory, "cpu")
        own_template = bool(getattr(model.tokenizer, "chat_template", None))
        return {"context_length": model.max_context, "chat_template": "own" if own_template else "fallback"}, []
    if task == "image-classification":
        classifier = get_loader(IMPORTED_RECIPES[task]).load(directory, "cpu", "torch")
        height, width = classifier.preprocessing.output_size
        return {"dimensions": classifier.dimensions, "height": height, "width": width}, list(classifier.labels)
    encoder = get_loader("sentence-embedding").load(directory, "cpu", "torch")
    return {"dimensions": encoder.dimensions, "max_length": encoder.max_length}, []


PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
IMAGE_PREPROCESSOR = "preprocessor_config.json"
IMPORTED_RECIPES = {
    "text-generation": "pretrained-causal-lm",
    "image-classification": "pretrained-image-classifier",
    "embeddings": "sentence-embedding",
}
CONVERT_HINT = (
    "convert it once, in an environment you trust, with "
    "`AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`"
)


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def refuse_relative(path: str) -> NoReturn:
    """Refuse a relative path with the reason: a Hub id is never fetched (the server runs offline), and a
    relative path is not resolved against the server's working directory, which the caller cannot see."""
    if HUB_ID.fullmatch(path):
        raise Unprocessable(
            f"{path!r} looks like a Hugging Face Hub id: the server does not download models (it runs offline). "
            f"Download it where you have a network (`hf download {path} --local-dir DIR`), copy DIR to the "
            "server, and pass its absolute path",
            param="path",
            code="hub_id_not_fetched",
        )
    raise Unprocessable(
        f"{path!r} is a relative path: give the absolute path of the model directory on the server's disk "
        "(a relative path is not resolved against the server's working directory)",
        param="path",
        code="relative_path",
    )


def check_importable(directory: Path) -> str:
    """Validate a Hugging Face directory for import; returns the task it will serve."""
    if not directory.is_absolute():
        refuse_relative(str(directory))
    if not directory.is_dir():
        raise Unprocessable(
            f"{str(directory)!r} is not a directory on the server: give the absolute path of a Hugging Face model "
            "directory on the server's disk",
            param="path",
            code="invalid_path",
        )
    if not (directory / "config.json").is_file():
        raise Unprocessable("the directory has no config.json", param="path", code="invalid_model_directory")
    if not any(directory.glob("*.safetensors")):
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLED)
        if pickled:
            raise Unprocessable(
                f"refusing pickled weights ({', '.join(pickled)}): loading them can run arbitrary code; "
                + CONVERT_HINT,
                param="path",
                code="pickled_weights",
            )
        raise Unprocessable("the directory has no *.safetensors weights", param="path", code="invalid_model_directory")
    try:
        config = json.loads((directory / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise Unprocessable(
            f"config.json is not valid JSON: {error}", param="path", code="invalid_model_directory"
        ) from None
    if not isinstance(config, dict):
        raise Unprocessable("config.json is not a JSON object", param="path", code="invalid_model_directory")
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForImageClassification") for a in architectures):
        if not (directory / IMAGE_PREPROCESSOR).is_file():
            raise Unprocessable(
                f"an image classifier needs its {IMAGE_PREPROCESSOR} (save it with "
                "`AutoImageProcessor.from_pretrained(DIR).save_pretrained(DIR)`)",
                param="path",
                code="invalid_model_directory",
            )
        return "image-classification"
    if not (directory / "tokenizer.json").is_file():
        raise Unprocessable(
            "the directory has no tokenizer.json: a fast tokenizer is required (save it with "
            "`AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)`)",
            param="path",
            code="invalid_model_directory",
        )
    if is_causal_lm(architectures):
        try:
            inspect_causal_lm(directory)
        except NotACausalLM as error:
            raise Unprocessable(str(error), param="path", code="invalid_model_directory") from None
        return "text-generation"
    if any(a.endswith(("ForConditionalGeneration", "ForSequenceClassification")) for a in architectures):
        raise Unprocessable(
            f"architecture {architectures[0]} is not served yet: import an encoder (served as embeddings) or a "
            "*ForCausalLM model (served by /v1/chat/completions and /v1/completions)",
            param="path",
            code="unsupported_architecture",
        )
    return "embeddings"
