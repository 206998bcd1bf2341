"""`openmaas predict`, `chat`, `complete` and `embed`: calling models from the terminal."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import console, print_json, table
from openmaas.sdk import delta_text

ModelArgument = Annotated[str, typer.Argument(help="name, name:VERSION or name:ALIAS")]
MaxTokensOption = Annotated[int | None, typer.Option(help="Most tokens to generate (default: the context's rest).")]
TemperatureOption = Annotated[float | None, typer.Option(help="0 is greedy; above it samples (up to 2).")]
SeedOption = Annotated[int | None, typer.Option(help="The same seed gives the same text.")]
EXIT_WORDS = {"exit", "quit", "/exit", "/quit"}


def generation_options(max_tokens: int | None, temperature: float | None, seed: int | None) -> dict[str, Any]:
    options = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    return {k: v for k, v in options.items() if v is not None}


def echo_stream(chunks: Iterator[dict[str, Any]]) -> str:
    """Print each chunk's text as it comes; the whole text at the end."""
    text = []
    for chunk in chunks:
        piece = delta_text(chunk)
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(text)


def predict(
    model: ModelArgument,
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Classify texts with a registered model."""
    result = client(url, api_key).predict(model, texts)
    if as_json:
        print_json(result)
        return
    rows = [[text, p["label"], f"{p['score']:.3f}"] for text, p in zip(texts, result["predictions"], strict=True)]
    title = f"{result['model']}:{result['version']}"
    console.print(table(["text", "label", "score"], rows, whole=("label",), title=title))


def chat(
    model: ModelArgument,
    message: Annotated[str | None, typer.Argument(help="Your message; without one, a conversation on stdin.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message that starts the conversation.")] = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON, once it is done.")] = False,
) -> None:
    """Chat with a generative model, the answer streamed token by token.

    With MESSAGE, one answer; without, a conversation: each line you type is a turn (exit, quit or an empty
    line ends it; so does Ctrl-D)."""
    sdk = client(url, api_key)
    options = generation_options(max_tokens, temperature, seed)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if message is not None:
        messages.append({"role": "user", "content": message})
        if as_json:
            print_json(sdk.chat(model, messages, **options))
        else:
            echo_stream(sdk.chat_stream(model, messages, **options))
        return
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(f"chatting with {model}; an empty line, exit or Ctrl-D ends", style="dim", markup=False)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if not line.strip() or line.strip().lower() in EXIT_WORDS:
            break
        messages.append({"role": "user", "content": line})
        if as_json:
            answer = sdk.chat(model, messages, **options)
            print_json(answer)
            reply = answer["choices"][0]["message"]["content"]
        else:
            reply = echo_stream(sdk.chat_stream(model, messages, **options))
        messages.append({"role": "assistant", "content": reply})


def complete(
    model: ModelArgument,
    prompt: Annotated[str, typer.Argument(help="The text to continue.")],
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON, once it is done.")] = False,
) -> None:
    """Continue a text with a generative model, streamed token by token."""
    sdk = client(url, api_key)
    options = generation_options(max_tokens, temperature, seed)
    if as_json:
        print_json(sdk.complete(model, prompt, **options))
    else:
        echo_stream(sdk.complete_stream(model, prompt, **options))


def embed(
    model: ModelArgument,
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
    dimensions: Annotated[int | None, typer.Option(help="Keep the first N dimensions (renormalised).")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Embed texts with an embeddings model: each text's vector (--json for every number)."""
    options: dict[str, Any] = {"encoding_format": "float"}
    if dimensions is not None:
        options["dimensions"] = dimensions
    result = client(url, api_key).embed(model, texts, **options)
    if as_json:
        print_json(result)
        return
    rows = []
    for text, item in zip(texts, result["data"], strict=True):
        vector = item["embedding"]
        head = " ".join(f"{value:+.4f}" for value in vector[:4])
        rows.append([text, len(vector), f"{math.sqrt(sum(v * v for v in vector)):.3f}", f"{head} …"])
    usage = result.get("usage", {})
    title = f"{result['model']} ({usage.get('prompt_tokens', 0)} tokens)"
    console.print(table(["text", "dimensions", "norm", "vector"], rows, whole=("dimensions",), title=title))
