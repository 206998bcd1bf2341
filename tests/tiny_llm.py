"""A tiny, randomly initialised Llama-style causal LM with a byte-level BPE tokenizer, built offline for tests."""

from __future__ import annotations

from pathlib import Path

TEXT = (
    "OpenMaaS turns data into models and models into network services. "
    "Users upload datasets, train models, and call them over HTTP. "
    "模型即服务 makes models callable by everyone. "
) * 20


def build_tiny_causal_lm(directory: Path, *, seed: int = 0, chat_template: str | None = None) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    torch.manual_seed(seed)
    eos = fast.eos_token_id
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    fast.save_pretrained(directory)
    return directory


def with_unshared_files(directory: Path) -> Path:
    """Rewrite the model's JSON files byte-differently (same content), so that none of its files is stored as
    the same blob as another tiny model's: deleting a version must not take files another version uses."""
    import json

    for path in directory.glob("*.json"):
        path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=3), encoding="utf-8")
    return directory
