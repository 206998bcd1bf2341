"""`openmaas predict`, `chat`, `complete` and `embed`: calling models from the terminal."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import console, print_json, table
from openmaas.sdk import delta_text

ModelArgument = Annotated[str, typer.Argument(help="name, name:VERSION or name:ALIAS")]
MaxTokensOption = Annotated[int | None, typer.Option(help="Most tokens to generate (default: the context's rest).")]
TemperatureOption = Annotated[float | None, typer.Option(help="0 is greedy; above it samples (up to 2).")]
SeedOption = Annotated[int | None, typer.Option(help="The same seed gives the same text.")]
ImageOption = Annotated[
    list[Path] | None,
    typer.Option("--image", help="An image file (PNG, JPEG, WebP, GIF) instead of texts; repeat for more."),
]
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


def texts_or_images(texts: list[str] | None, images: list[Path] | None) -> list[bytes] | None:
    """The images' bytes when --image is given (then no texts), None for texts; neither is an error."""
    if texts and images:
        raise typer.BadParameter("give texts or --image files, not both")
    if not texts and not images:
        raise typer.BadParameter("give texts, or image files with --image")
    return [path.read_bytes() for path in images] if images else None


def ranked(scores: dict[str, float], limit: int = 5) -> str:
    return ", ".join(f"{label} {score:.3f}" for label, score in list(scores.items())[:limit])


def predict(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    image: ImageOption = None,
    top_k: Annotated[
        int | None, typer.Option(help="Labels per prediction in `scores`, best first (default: all, or 5 of many).")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Classify texts, or image files (--image cat.jpg --image dog.png), with a registered model."""
    images = texts_or_images(texts, image)
    sdk = client(url, api_key)
    if images is not None:
        result = sdk.predict_images(model, images, top_k=top_k)
        names = [str(path) for path in image or []]
    else:
        result = sdk.predict(model, texts or [], top_k=top_k)
        names = list(texts or [])
    if as_json:
        print_json(result)
        return
    title = f"{result['model']}:{result['version']}"
    if images is None and top_k is None:
        rows = [[name, p["label"], f"{p['score']:.3f}"] for name, p in zip(names, result["predictions"], strict=True)]
        console.print(table(["text", "label", "score"], rows, whole=("label",), title=title))
        return
    rows = [
        [name, p["label"], f"{p['score']:.3f}", ranked(p["scores"])]
        for name, p in zip(names, result["predictions"], strict=True)
    ]
    headers = ["image" if images is not None else "text", "label", "score", "best labels"]
    console.print(table(headers, rows, whole=("label",), title=title))


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
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    image: ImageOption = None,
    dimensions: Annotated[int | None, typer.Option(help="Keep the first N dimensions (renormalised).")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Embed texts with an embeddings model, or image files (--image cat.jpg) with an image model such as
    efficientnet-lite0: each one's vector (--json for every number)."""
    images = texts_or_images(texts, image)
    if images is not None:
        if dimensions is not None:
            raise typer.BadParameter("--dimensions is for texts; an image's embedding has the model's own size")
        result = client(url, api_key).embed_images(model, images)
        names = [str(path) for path in image or []]
        title = f"{result['model']}:{result['version']} ({len(names)} images)"
    else:
        options: dict[str, Any] = {"encoding_format": "float"}
        if dimensions is not None:
            options["dimensions"] = dimensions
        result = client(url, api_key).embed(model, texts or [], **options)
        names = list(texts or [])
        title = f"{result['model']} ({result.get('usage', {}).get('prompt_tokens', 0)} tokens)"
    if as_json:
        print_json(result)
        return
    rows = []
    for name, item in zip(names, result["data"], strict=True):
        vector = item["embedding"]
        head = " ".join(f"{value:+.4f}" for value in vector[:4])
        rows.append([name, len(vector), f"{math.sqrt(sum(v * v for v in vector)):.3f}", f"{head} …"])
    headers = ["image" if images is not None else "text", "dimensions", "norm", "vector"]
    console.print(table(headers, rows, whole=("dimensions",), title=title))
