"""Offline Mistral tokenizers: mistral-common's SentencePiece files converted to Hugging Face fast tokenizers.

``mistral-common`` (a pip package) ships the SentencePiece models of the Mistral releases:

- ``tokenizer.model.v1``: the Mistral-7B (v0.1 / v0.2) vocabulary, 32,000 ids; ``[INST]`` is plain text;
- ``mistral_instruct_tokenizer_240323.model.v3``: the Instruct-v0.3 vocabulary, 32,768 ids; ``[INST]`` (3) and
  ``[/INST]`` (4) are control tokens.

Both are converted with ``LlamaTokenizer`` in its legacy mode, as the released Hugging Face Mistral tokenizers
are: ``<s>`` (1) is BOS and is prepended when special tokens are requested, ``</s>`` (2) is EOS, and every
text piece between special tokens gets SentencePiece's leading ``▁``. For v3, ``[INST]`` and ``[/INST]`` absorb
the spaces to their left (``lstrip``), so the bundled ``mistral`` template gives mistral-common's own v3 ids
(``[INST]▁What▁is…[/INST]``) as well as its v1 ids (``▁[INST]▁What▁is…▁[/INST]``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

MISTRAL_MODEL_FILES = {
    "mistral-v1": "tokenizer.model.v1",
    "mistral-v3": "mistral_instruct_tokenizer_240323.model.v3",
}
LSTRIP_TOKENS = {"mistral-v1": (), "mistral-v3": ("[INST]", "[/INST]")}
MODEL_MAX_LENGTH = 32768


def mistral_model_file(name: str) -> Path:
    """The SentencePiece file of bundled tokenizer ``name`` inside the installed ``mistral-common``."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / MISTRAL_MODEL_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install mistral-common as pinned in requirements.txt")
    return path


def _set_lstrip(target: Path, tokens: tuple[str, ...]) -> None:
    """Mark the added tokens ``tokens`` as absorbing the whitespace on their left, in the saved files."""
    if not tokens:
        return
    tokenizer_json = target / "tokenizer.json"
    spec = json.loads(tokenizer_json.read_text())
    for added in spec["added_tokens"]:
        if added["content"] in tokens:
            added["lstrip"] = True
    tokenizer_json.write_text(json.dumps(spec, ensure_ascii=False))
    config_json = target / "tokenizer_config.json"
    config = json.loads(config_json.read_text())
    for added in (config.get("added_tokens_decoder") or {}).values():
        if added.get("content") in tokens:
            added["lstrip"] = True
    config_json.write_text(json.dumps(config, ensure_ascii=False, indent=2))


def build_mistral(name: str, target: Path, chat_template: str) -> None:
    """Convert the SentencePiece model of ``name`` (``mistral-v1`` / ``mistral-v3``) into ``target``.

    Raises:
        RuntimeError: when the converted tokenizer does not have BOS 1 / EOS 2 or does not prepend BOS.
    """
    from transformers import AutoTokenizer, LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(mistral_model_file(name), Path(tmp) / "tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(
            tmp, legacy=True, add_bos_token=True, add_eos_token=False, model_max_length=MODEL_MAX_LENGTH
        )
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(target)
    (target / "tokenizer.model").unlink(missing_ok=True)  # the fast tokenizer.json is all that is needed
    _set_lstrip(target, LSTRIP_TOKENS[name])
    check = AutoTokenizer.from_pretrained(target)
    if (check.bos_token_id, check.eos_token_id) != (1, 2) or check("hi")["input_ids"][0] != 1:
        raise RuntimeError(
            f"{name}: converted tokenizer has BOS {check.bos_token_id}, EOS {check.eos_token_id} "
            f"and encodes 'hi' as {check('hi')['input_ids']}; expected BOS 1 prepended, EOS 2"
        )
