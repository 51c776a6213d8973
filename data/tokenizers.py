"""Tokenizers: load any Hugging Face tokenizer, or build a bundled one that works offline.

Bundled names (no download needed):

- ``llama3``: the real Llama 3 vocabulary (128,256 ids) shipped by the ``llama-models`` pip package in
  tiktoken format, converted once to a Hugging Face fast tokenizer, given the Llama 3 instruct chat
  template, and cached under ``$SIMPO_CACHE`` (default ``~/.cache/simpo``). Like the released tokenizer it
  prepends ``<|begin_of_text|>`` when special tokens are requested, and its EOS is ``<|eot_id|>``.
- ``mistral-v1`` / ``mistral-v3``: the Mistral-7B (v0.1/v0.2) and Instruct-v0.3 SentencePiece vocabularies shipped
  by the ``mistral-common`` pip package, converted to fast tokenizers (BOS ``<s>`` = 1 prepended when special
  tokens are requested, EOS ``</s>`` = 2) and given the bundled ``mistral`` chat template
  (see ``data/mistral_tokenizers.py``).

Bundled chat templates (``data/chat_templates/<name>.jinja``): ``llama3``, ``mistral``, ``gemma2``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from simpo.errors import UserError
from simpo.io import atomic_directory

CHAT_TEMPLATE_DIR = Path(__file__).parent / "chat_templates"


def cache_root() -> Path:
    """The directory for built artefacts (``$SIMPO_CACHE`` or ``~/.cache/simpo``)."""
    return Path(os.environ.get("SIMPO_CACHE", Path.home() / ".cache" / "simpo"))


def bundled_chat_template(name: str) -> str:
    """The text of a chat template shipped in ``data/chat_templates/<name>.jinja``."""
    path = CHAT_TEMPLATE_DIR / f"{name}.jinja"
    if not path.is_file():
        known = sorted(p.stem for p in CHAT_TEMPLATE_DIR.glob("*.jinja"))
        raise UserError(f"unknown bundled chat template {name!r}; bundled templates: {known}")
    return path.read_text()


def _build_llama3(target: Path) -> None:
    """Convert the tiktoken Llama 3 vocabulary of ``llama-models`` into a fast tokenizer at ``target``."""
    import llama_models
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    model_file = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    meta = MetaTokenizer(model_file)
    specials = sorted(meta.special_tokens, key=meta.special_tokens.__getitem__)
    backend = TikTokenConverter(
        vocab_file=str(model_file), pattern=meta.pat_str, extra_special_tokens=specials
    ).converted()
    bos = "<|begin_of_text|>"
    bos_id = meta.special_tokens[bos]
    if backend.token_to_id(bos) != bos_id:
        raise RuntimeError(f"Llama 3 conversion put {bos} at {backend.token_to_id(bos)}, expected {bos_id}")
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token="<|eot_id|>",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = bundled_chat_template("llama3")
    tokenizer.save_pretrained(target)


def _mistral_builder(name: str) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        from data.mistral_tokenizers import build_mistral

        build_mistral(name, target, bundled_chat_template("mistral"))

    return build


BUNDLED: dict[str, Callable[[Path], None]] = {
    "llama3": _build_llama3,
    "mistral-v1": _mistral_builder("mistral-v1"),
    "mistral-v3": _mistral_builder("mistral-v3"),
}


def bundled_tokenizer_dir(name: str) -> Path:
    """Build (once) and return the cached directory of a bundled tokenizer.

    The directory is written to a temporary sibling and renamed into place, so an interrupted build
    never leaves a half-written cache behind.
    """
    target = cache_root() / "tokenizers" / name
    if (target / "tokenizer.json").is_file():
        return target
    with atomic_directory(target, replace=False) as tmp:  # another process finished first: keep theirs
        BUNDLED[name](tmp)
    return target


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer by bundled name (``llama3``, ``mistral-v1``, ``mistral-v3``), local directory or hub id."""
    source = str(bundled_tokenizer_dir(name_or_path)) if name_or_path in BUNDLED else name_or_path
    return AutoTokenizer.from_pretrained(source)


def override_chat_template(
    tokenizer: PreTrainedTokenizerBase, chat_template: str | None, key: str = "data.chat_template"
) -> None:
    """Replace the tokenizer's chat template by a bundled one (by name) or a Jinja string; ``None`` keeps it.

    Raises:
        ValueError: an unknown bundled name (the message names ``key`` and lists the bundled templates).
    """
    if chat_template is None:
        return
    is_name = "{" not in chat_template
    try:
        tokenizer.chat_template = bundled_chat_template(chat_template) if is_name else chat_template
    except ValueError as error:
        raise UserError(f"{key}={chat_template!r}: {error}, or give a Jinja string") from None
