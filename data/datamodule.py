"""The LightningDataModule: load preference splits, tokenise them with the SimPO recipe, batch them."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import datasets
import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from data.collate import PreferenceCollator
from data.resumable_loader import ResumableDataLoader
from data.sources import load_split
from data.tokenize import BadRowError, TruncationSettings, encode_pair
from data.tokenizers import override_chat_template

log = logging.getLogger(__name__)

TOKEN_COLUMNS = ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]


def tokenize_split(
    rows: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    truncation: TruncationSettings,
    name: str,
    max_drop_fraction: float,
) -> datasets.Dataset:
    """Tokenise every row; drop rows the recipe cannot use, count them by reason, and fail past a limit.

    Returns:
        a data set with the columns of ``encode_pair`` only.

    Raises:
        ValueError: when more than ``max_drop_fraction`` of the rows were dropped (names the reasons).
    """

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        try:
            return {**encode_pair(row, tokenizer, truncation), "drop_reason": ""}
        except BadRowError as error:
            return {**{column: [] for column in TOKEN_COLUMNS}, "drop_reason": error.reason}

    encoded = rows.map(encode, remove_columns=rows.column_names, desc=f"tokenising {name}")
    reasons = Counter(reason for reason in encoded["drop_reason"] if reason)
    dropped = sum(reasons.values())
    if dropped:
        examples = {r: [i for i, x in enumerate(encoded["drop_reason"]) if x == r][:3] for r in reasons}
        message = f"{name}: dropped {dropped} of {len(encoded)} rows: " + ", ".join(
            f"{reason}={count} (rows {examples[reason]})" for reason, count in reasons.most_common()
        )
        if dropped > max_drop_fraction * len(encoded):
            raise ValueError(f"{message}; more than data.max_drop_fraction={max_drop_fraction}: fix the data")
        log.warning(message)
    kept = encoded.filter(lambda reason: not reason, input_columns="drop_reason")
    return kept.remove_columns("drop_reason")


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs from ``dataset`` as (2B, T) batches of chosen-then-rejected sequences.

    Args:
        tokenizer: the policy's tokenizer, with a chat template.
        dataset: local file, local directory of split files / ``save_to_disk`` copy, or hub id.
        train_split: split trained on.
        test_split: split validated on (``None``: no validation).
        max_length, max_prompt_length, truncation_mode: see ``TruncationSettings``.
        batch_size: pairs per device per step (a batch holds 2 x batch_size sequences).
        global_batch_size: pairs per optimizer step over all devices (``train.py`` derives gradient
            accumulation from it); ``None`` leaves ``trainer.accumulate_grad_batches`` as set.
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: round padded lengths up to a multiple of this.
        max_drop_fraction: largest fraction of unusable rows tolerated per split.
        seed: seeds the shuffling of the training pairs.
        chat_template: replaces the tokenizer's chat template (a bundled name such as ``llama3``, or a
            Jinja string); ``None`` keeps the tokenizer's own. The exported tokenizer carries it too.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        dataset: str,
        train_split: str = "train_prefs",
        test_split: str | None = "test_prefs",
        max_length: int = 512,
        max_prompt_length: int = 256,
        truncation_mode: str = "keep_end",
        batch_size: int = 2,
        global_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        max_drop_fraction: float = 0.01,
        seed: int = 42,
        chat_template: str | None = None,
    ) -> None:
        super().__init__()
        override_chat_template(tokenizer, chat_template)
        self.tokenizer = tokenizer
        self.dataset = dataset
        self.train_split = train_split
        self.test_split = test_split
        self.truncation = TruncationSettings(max_length, max_prompt_length, truncation_mode)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.global_batch_size = global_batch_size
        self.num_workers = num_workers
        self.max_drop_fraction = max_drop_fraction
        self.seed = seed
        pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self.collator = PreferenceCollator(pad_token_id=pad_id, pad_to_multiple_of=pad_to_multiple_of)
        self.splits: dict[str, datasets.Dataset] = {}
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, int] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load and tokenise the splits (once)."""
        wanted = {"val": self.test_split} if stage == "validate" else {"train": self.train_split, "val": self.test_split}
        for role, split in wanted.items():
            if split is None or role in self.splits:
                continue
            rows = load_split(self.dataset, split)
            self.splits[role] = tokenize_split(rows, self.tokenizer, self.truncation, split, self.max_drop_fraction)
            log.info("%s split %r: %d pairs", role, split, len(self.splits[role]))

    def _loader(self, role: str, shuffle: bool) -> ResumableDataLoader:
        return ResumableDataLoader(
            self.splits[role],
            batch_size=self.batch_size,
            seed=self.seed,
            shuffle=shuffle,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", shuffle=True)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, dict[str, int]]:
        """The training loader's position (epoch, batches done), saved in every checkpoint.

        Lightning restores the data module before it builds the loaders, so the position is applied
        however early the loader is first built (``estimated_stepping_batches`` builds it before the loops
        are restored, which is why the loader's own state alone is not enough).
        """
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        self._train_loader_state = state.get("train_loader")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if "val" in self.splits else []
