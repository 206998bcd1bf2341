"""Model tasks as users meet them: what each task is called and which routes serve it, so that every refusal of
the wrong kind of model names the routes that do answer it, from this one table."""

from __future__ import annotations

from openmaas.errors import InvalidRequest

# task -> (how it reads in a sentence, the routes that serve it; `{ref}` is the caller's reference)
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text-classification": ("a text-classification model", ("POST /v1/models/{ref}/predict",)),
    "image-classification": (
        "an image-classification model",
        ("POST /v1/models/{ref}/predict with images", "POST /v1/models/{ref}/embed (image embeddings)"),
    ),
    "embeddings": ("an embeddings model", ("POST /v1/embeddings",)),
    "text-generation": ("a text-generation (chat) model", ("POST /v1/chat/completions", "POST /v1/completions")),
}


def described(task: str) -> str:
    """`an embeddings model`, `a text-classification model`: the task with its article."""
    known = TASKS.get(task)
    if known is not None:
        return known[0]
    return f"{'an' if task[:1].lower() in 'aeiou' else 'a'} {task} model"


def routes_for(task: str, ref: str) -> str:
    routes = TASKS.get(task, ("", ()))[1]
    return " or ".join(route.replace("{ref}", ref) for route in routes)


def wrong_task(ref: str, task: str, route: str) -> InvalidRequest:
    """The 400 for calling `route` with a model of `task`: it says which routes serve that model."""
    served_by = routes_for(task, ref)
    advice = f"; call it with {served_by}" if served_by else ""
    return InvalidRequest(
        f"model {ref!r} is {described(task)}, which {route.replace('{ref}', ref)} does not serve{advice}",
        param="model",
        code="wrong_task",
    )
