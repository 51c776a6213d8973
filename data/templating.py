"""The recipe's chat-templated texts: the prompt turns, and each assistant turn on its own.

The prompt text is the chat template over the prompt turns (no generation prompt), with an empty system message
first when the template mentions a system role; each response text is the template over the single assistant
turn with a leading BOS string removed, so the assistant header belongs to the response. ``data/pair_encoding.py``
tokenises these texts; ``data/bos.py`` renders a probe with them to tell whether the template writes BOS twice.
"""

from __future__ import annotations

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from data.layouts import Message
from simpo.errors import UserError

NO_TEMPLATE = (
    "the tokenizer has no chat template: set data.chat_template (a bundled name: llama3, mistral, gemma2; "
    "or a Jinja string)"
)


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ``ValueError`` (naming ``data.chat_template``) when ``tokenizer`` has no chat template."""
    if not tokenizer.chat_template:
        raise UserError(NO_TEMPLATE)


def _strip_prefix(text: str, prefix: str | None) -> str:
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def template_texts(
    tokenizer: PreTrainedTokenizerBase, prompt: list[Message], chosen: Message, rejected: Message
) -> tuple[str, str, str]:
    """Chat-templated (prompt, chosen, rejected) texts of the reference recipe.

    Args:
        tokenizer: a tokenizer with a chat template.
        prompt: the prompt turns (``{role, content}`` messages).
        chosen, rejected: the two assistant turns.

    Raises:
        ValueError: the tokenizer has no chat template, or the template fails (names ``data.chat_template``).
    """
    require_chat_template(tokenizer)
    if "system" in tokenizer.chat_template and prompt[0].get("role") != "system":
        prompt = [{"role": "system", "content": ""}, *prompt]
    try:
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False)
        chosen_text, rejected_text = (
            _strip_prefix(tokenizer.apply_chat_template([turn], tokenize=False), tokenizer.bos_token)
            for turn in (chosen, rejected)
        )
    except TemplateError as error:
        raise UserError(
            f"the chat template failed ({error}); the recipe renders the prompt turns and each assistant turn on "
            "its own: set data.chat_template to a template that allows that (bundled: llama3, mistral, gemma2)"
        ) from error
    return prompt_text, chosen_text, rejected_text
