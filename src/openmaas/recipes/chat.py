"""Chat formatting for causal language models: the model's own chat template, or our documented fallback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Used when a model directory has no chat template (a base model, or one trained by the `causal-lm` recipe,
# which saves this template with its tokenizer). Each turn is `<|role|>` on its own line, the content, then the
# end-of-sequence token; a generation prompt opens an assistant turn, so generation stops at the EOS token.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

ROLES = ("system", "user", "assistant", "tool", "developer")


def chat_template(tokenizer: Any) -> str:
    """The template a tokenizer renders chats with: its own if it has one, else the fallback."""
    return getattr(tokenizer, "chat_template", None) or FALLBACK_CHAT_TEMPLATE


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """Messages ({"role", "content"} with string content) → the prompt text the model was trained on."""
    text: str = tokenizer.apply_chat_template(
        list(messages),
        chat_template=chat_template(tokenizer),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return text
