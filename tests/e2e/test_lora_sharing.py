"""Many LoRA adapters on one base: two LoRA versions of one tiny Llama, imported as the lora recipe exports
them (the base's files plus `adapter/`), load one copy of the base (the pool's own accounting, on /metrics),
decode in one batch with exactly the tokens each gets alone at temperature 0, and unload one at a time."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.tiny_llm import build_tiny_causal_lm

PROMPTS = ["Users upload", "models into", "OpenMaaS turns", "模型"]


def lora_version(base: Path, directory: Path, seed: int) -> Path:
    """The base's files and a random (non-zero) LoRA adapter in adapter/, as recipes/lora.py exports them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shutil.copytree(base, directory)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(directory / "adapter")
    return directory


def pool_bytes(http: httpx.Client) -> int:
    found = re.search(r"^openmaas_pool_memory_bytes ([0-9.e+]+)$", http.get("/metrics").text, re.MULTILINE)
    assert found, "no openmaas_pool_memory_bytes on /metrics"
    return int(float(found.group(1)))


def complete(http: httpx.Client, model: str, prompt: str) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": 24, "temperature": 0}
    answer = http.post("/v1/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["choices"][0]["text"])


@pytest.fixture(scope="module")
def lora_pair(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("lora-pair")
    base = build_tiny_causal_lm(root / "base", seed=7)
    with server.http() as http:
        for name, seed in (("lora-one", 1), ("lora-two", 2)):
            directory = lora_version(base, root / name, seed)
            # an import loads the model once: slow on a busy machine
            answer = http.post("/v1/models/import", json={"path": str(directory), "name": name}, timeout=300)
            assert answer.status_code == 201, answer.text
    return "lora-one", "lora-two"


def test_two_lora_versions_load_one_base_and_batch_together(server: Server, lora_pair: tuple[str, str]) -> None:
    one, two = lora_pair
    with server.http() as http:
        before = pool_bytes(http)
        first = http.post(f"/v1/models/{one}/load", timeout=300).json()
        with_one = pool_bytes(http)
        second = http.post(f"/v1/models/{two}/load", timeout=300).json()
        with_two = pool_bytes(http)
        base = with_one - before - first["memory_bytes"]
        assert first["memory_bytes"] == second["memory_bytes"] > 0  # each version's own: its adapter
        assert base > 10 * first["memory_bytes"]  # the base is what weighs
        assert with_two - with_one == second["memory_bytes"]  # the second version brought no second base

        alone = {(model, prompt): complete(http, model, prompt) for model in lora_pair for prompt in PROMPTS}
        assert any(alone[(one, p)] != alone[(two, p)] for p in PROMPTS)  # the adapters do change the answers
        jobs = [(model, prompt) for prompt in PROMPTS for model in lora_pair] * 2
        with ThreadPoolExecutor(len(jobs)) as pool:  # both adapters' generations decode in the same batches
            together = list(pool.map(lambda job: complete(http, *job), jobs))
        assert together == [alone[job] for job in jobs]

        assert http.post(f"/v1/models/{one}/unload").status_code == 200
        assert pool_bytes(http) == with_two - first["memory_bytes"]  # only the adapter left: the base serves two
        assert complete(http, two, PROMPTS[0]) == alone[(two, PROMPTS[0])]
        assert http.post(f"/v1/models/{two}/unload").status_code == 200
        assert pool_bytes(http) == before  # the last version took the base with it
        assert complete(http, one, PROMPTS[1]) == alone[(one, PROMPTS[1])]  # loads afresh on demand


def test_unloading_one_lora_version_mid_stream_ends_only_its_generations(
    server: Server, lora_pair: tuple[str, str]
) -> None:
    one, two = lora_pair
    with server.http() as http:
        alone = complete(http, two, PROMPTS[2])
        for model in lora_pair:
            assert http.post(f"/v1/models/{model}/load", timeout=300).status_code == 200
        body = {"model": one, "prompt": PROMPTS[0], "max_tokens": 480, "temperature": 0, "stream": True}
        with ThreadPoolExecutor(1) as pool, http.stream("POST", "/v1/completions", json=body, timeout=120) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))  # one's generation runs
            other = pool.submit(complete, http, two, PROMPTS[2])  # joins the batch beside it
            assert http.post(f"/v1/models/{one}/unload").status_code == 200
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]" or '"model_unloaded"' in rest[-1], rest[-3:]  # ended, never hung
        assert other.result(timeout=120) == alone  # the other adapter's generation went on, unchanged
        assert complete(http, one, PROMPTS[0])  # the unloaded version loads again on its next request
