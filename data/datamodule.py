"""The LightningDataModule: load preference splits, tokenise them with the SimPO recipe, report, batch them.

Per split: load the rows (``data/sources.py``, local files through ``data/file_rows.py``; a validation set may be
carved out of train), map the columns and detect the layout (``data/layouts.py``), tokenise with ``datasets.map``
(``data/pair_encoding.py``), enforce the single BOS (``data/bos.py``), count what was dropped and why
(``data/report.py``), and cache the result under a fingerprint of everything it depends on (``data/cache.py``).
``prepare_data`` does the tokenising once per node; ``setup`` then loads the cache, writes ``data_report.json`` and
prints a short table. Settings are checked in ``__init__`` (``simpo/core/value_checks.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import datasets
import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from data import cache
from data.bos import BOS_POLICIES, diagnose
from data.collate import LAYOUTS, PreferenceCollator
from data.layouts import detect_layout, resolve_columns
from data.pair_encoding import TOKEN_COLUMNS, PairEncoder, TruncationSettings
from data.progress import no_progress_bars
from data.report import (
    STATS,
    check_drop_fraction,
    check_rows_left,
    check_special_text,
    format_table,
    split_report,
    write_report,
)
from data.resumable_loader import ResumableDataLoader
from data.sources import SplitRows, carve_validation, check_val_size, is_single_file, load_split
from data.special_text import SPECIAL_TEXT_POLICIES
from data.templating import require_chat_template
from data.token_budget import TokenBudget, describe, pair_lengths, plan_micro_batches
from data.tokenizers import override_chat_template
from simpo.core.value_checks import check_non_negative_int, check_number, check_one_of, check_positive_int, check_seed
from simpo.errors import UserError

log = logging.getLogger(__name__)

REPORT_NAME = "data_report.json"
MAP_BATCH_SIZE = 256


def default_pack_length(layout: str, max_length: int) -> int:
    """``data.pack_length=null``: the longest unit of the layout, i.e. ``max_length`` for ``packed`` (a sequence) and
    ``2 * max_length`` for ``shared_prompt_packed`` (a pair row: the prompt once, both responses)."""
    return 2 * max_length if layout == "shared_prompt_packed" else max_length


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs from ``dataset`` as (2B, T) batches of chosen-then-rejected sequences.

    Where validation comes from (``validation_source``; ``has_validation`` says whether there is any, already
    after ``__init__``):

    - a directory or hub id: ``test_split``; with ``test_split=None``, a seeded ``val_size`` carve-out of
      ``train_split``; with neither, no validation. ``val_size`` with a ``test_split`` is an error, and so is
      ``test_split == train_split`` (validation never runs on training rows);
    - a single file (``.jsonl`` / ``.json`` / ``.parquet``): a file has no splits, so it is the training split
      whatever ``train_split`` / ``test_split`` say; ``val_size`` carves a seeded validation set out of it (the
      rest is trained on), otherwise there is no validation. One INFO log line says which. For evaluation only
      (``evaluate.py``), ``whole_file_validation=True`` makes a single file without ``val_size`` the validation
      split, every row of it, and leaves no training split (with ``val_size`` the carve-out is still the
      validation set, the same rows a training run validated on).

    Every setting is checked here, before any work: a bad value stops with a ``ValueError`` that names
    ``data.<key>`` and the value.

    Args:
        tokenizer: the policy's tokenizer; it needs a chat template unless ``chat_template`` gives one.
        dataset: local file, local directory of split files / ``save_to_disk`` copy, or hub id.
        train_split: split trained on (not used for a single file).
        test_split: split validated on (``None``: carve one with ``val_size``, or no validation; not used for a
            single file).
        max_length, max_prompt_length, truncation_mode: see ``TruncationSettings``.
        batch_size: pairs per device per step (a batch holds 2 x batch_size sequences); not used when
            ``max_tokens_per_batch`` is set.
        global_batch_size: pairs per optimizer step over all devices (``train.py`` derives gradient
            accumulation from it); ``None`` leaves ``trainer.accumulate_grad_batches`` as set. Cannot be combined
            with ``max_tokens_per_batch``, under which the pairs per step vary.
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: round padded lengths up to a multiple of this.
        layout: how a batch lays out its tokens (``data/collate.py``): ``padded`` (2B padded rows), ``packed``
            (sequences end to end), ``shared_prompt`` (one [prompt, chosen, rejected] row per pair: the prompt computed
            once) or ``shared_prompt_packed``.
        pack_length: tokens per packed row (``None``: ``default_pack_length``); a longer sequence or pair gets its
            own row.
        max_tokens_per_batch: fill each micro-batch (training and validation) with as many pairs as fit this many
            token positions as the layout lays them out, padding included (``data/token_budget.py``); an optimizer
            step is then ``trainer.accumulate_grad_batches`` micro-batches per process and its loss the mean over
            its pairs (each batch carries a ``loss_weight``). ``None``: ``batch_size`` pairs per micro-batch.
        max_drop_fraction: largest fraction of unusable rows tolerated per split.
        seed: seeds the shuffling of the training pairs and the carving of ``val_size``.
        chat_template: replaces the tokenizer's chat template (a bundled name: ``llama3``, ``mistral``,
            ``gemma2``; or a Jinja string); ``None`` keeps the tokenizer's own. The exported tokenizer carries it.
        val_size: with ``test_split=None`` or a single file, the validation rows carved out of train: a
            fraction in (0, 1) or a count; ``None`` (and no test split): no validation.
        columns: ``{prompt: ..., chosen: ..., rejected: ...}``, the data set's names for the three fields.
        bos_policy: ``error`` (a sequence with more than one BOS stops setup) or ``fix`` (extra BOS dropped).
        special_text: special-token strings in message contents: ``refuse`` (setup stops naming the rows),
            ``escape`` (tokenised as plain text) or ``allow`` (they become control tokens); ``data/special_text.py``.
        num_proc: processes that tokenise (``datasets.map``); ``None`` or 1: this process.
        cache: reuse tokenised splits from ``<cache root>/tokenized/<fingerprint>/`` (and store them there).
        report_dir: directory that receives ``data_report.json`` (``None``: the report is only logged).
        whole_file_validation: evaluation only: a single file without ``val_size`` is validated on whole (not a
            data key: ``evaluate.py`` passes it).
        layout_choice: why ``layout`` is what it is (``data.collate.choose_layout``; not a data key), reported.
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
        layout: str = "padded",
        pack_length: int | None = None,
        max_tokens_per_batch: int | None = None,
        max_drop_fraction: float = 0.01,
        seed: int = 42,
        chat_template: str | None = None,
        val_size: float | int | None = None,
        columns: Mapping[str, str] | None = None,
        bos_policy: str = "error",
        special_text: str = "refuse",
        num_proc: int | None = None,
        cache: bool = True,
        report_dir: str | Path | None = None,
        whole_file_validation: bool = False,
        layout_choice: str | None = None,
    ) -> None:
        super().__init__()
        self.layout_choice = layout_choice
        self.truncation = TruncationSettings(max_length, max_prompt_length, truncation_mode)  # type: ignore[arg-type]
        self.batch_size = check_positive_int("data.batch_size", batch_size)
        self.global_batch_size = check_positive_int("data.global_batch_size", global_batch_size, nullable=True)
        self.max_tokens_per_batch = check_positive_int("data.max_tokens_per_batch", max_tokens_per_batch, nullable=True)
        if self.max_tokens_per_batch is not None and self.global_batch_size is not None:
            raise UserError(
                f"data.global_batch_size={global_batch_size} fixes the pairs per optimizer step, while "
                f"data.max_tokens_per_batch={max_tokens_per_batch} fills micro-batches by tokens, so the pairs per "
                "step vary: set data.global_batch_size=null and choose trainer.accumulate_grad_batches (micro-batches "
                "per device per step; the log gives the mean pairs per micro-batch), or data.max_tokens_per_batch=null"
            )
        self.num_workers = check_non_negative_int("data.num_workers", num_workers)
        pad_to_multiple_of = check_positive_int("data.pad_to_multiple_of", pad_to_multiple_of, nullable=True)
        self.max_drop_fraction = check_number(
            "data.max_drop_fraction", max_drop_fraction, "a number in [0, 1]", lambda x: 0 <= x <= 1
        )
        self.val_size = check_val_size(val_size)
        self.bos_policy = check_one_of("data.bos_policy", bos_policy, BOS_POLICIES)
        self.special_text = check_one_of("data.special_text", special_text, SPECIAL_TEXT_POLICIES)
        num_proc = check_positive_int("data.num_proc", num_proc, nullable=True)
        self.seed = check_seed("data.seed", seed)
        if not isinstance(dataset, (str, Path)) or not str(dataset).strip():
            raise UserError(f"data.dataset must name a file, a directory or a hub data set, not {dataset!r}")
        if columns is not None and not isinstance(columns, Mapping):
            raise UserError(f"data.columns must map prompt / chosen / rejected to column names, not {columns!r}")
        self.dataset = str(dataset)
        self.single_file = is_single_file(self.dataset)
        if not self.single_file:
            if test_split is not None and val_size is not None:
                raise UserError(
                    f"data.val_size={val_size} carves validation rows out of train only when data.test_split=null "
                    f"(it is {test_split!r}): set one of them to null"
                )
            if test_split is not None and test_split == train_split:
                raise UserError(
                    f"data.test_split={test_split!r} is also data.train_split, so validation would run on training "
                    "rows: name another split, or set data.test_split=null and data.val_size=0.05 to carve one"
                )
        override_chat_template(tokenizer, chat_template)
        require_chat_template(tokenizer)
        self.tokenizer = tokenizer
        self.train_split = train_split
        self.test_split = test_split
        self.columns = dict(columns) if columns else None
        self.num_proc = num_proc if num_proc and num_proc > 1 else None
        self.use_cache = cache
        self.report_dir = Path(report_dir) if report_dir is not None else None
        self.whole_file_validation = bool(whole_file_validation)
        pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        pack_length = check_positive_int("data.pack_length", pack_length, nullable=True)
        layout = check_one_of("data.layout", layout, LAYOUTS)
        self.collator = PreferenceCollator(
            pad_token_id=pad_id,
            pad_to_multiple_of=pad_to_multiple_of,
            layout=layout,
            pack_length=pack_length or default_pack_length(layout, self.truncation.max_length),
        )
        self.splits: dict[str, datasets.Dataset] = {}
        self._unpublished = False  # splits loaded since the report was last written
        self.report: dict[str, Any] = {"splits": {}}
        self._prepared: dict[str, tuple[datasets.Dataset, dict[str, Any]] | None] = {}
        self._loaded: dict[str, SplitRows] = {}
        self._tokenizer_digest: str | None = None
        self.micro_batches: dict[str, tuple[list[list[int]], TokenBudget]] = {}  # per role, with max_tokens_per_batch
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, int] | None = None

    @property
    def validation_source(self) -> str:
        """Where validation pairs come from: ``test_split``, ``val_size`` (a carve-out of train), ``file`` (a
        single file, whole: ``whole_file_validation``) or ``none``."""
        if self.val_size is not None:
            return "val_size"
        if self.single_file:
            return "file" if self.whole_file_validation else "none"
        return "test_split" if self.test_split is not None else "none"

    @property
    def has_validation(self) -> bool:
        """Whether there will be validation pairs (known from the settings alone, before ``setup``)."""
        return self.validation_source != "none"

    # ---- loading and tokenising ----

    def _load(self, split: str) -> SplitRows:
        """``load_split`` once per split (a carve-out reads its split once for both roles)."""
        if split not in self._loaded:
            loaded = load_split(self.dataset, split)
            if len(loaded.rows) == 0:  # every line malformed: report why, without tokenising
                stats: dict[str, list[Any]] = {column: [] for column in STATS}
                report = split_report(stats, None, split=loaded.name, layout="-", bos_policy=self.bos_policy,
                                      line_drops=loaded.line_drops())  # fmt: skip
                check_rows_left(report, self.dataset)
            self._loaded[split] = loaded
        return self._loaded[split]

    def _rows(self, role: str) -> tuple[SplitRows, list[int] | None] | None:
        """(rows of ``role``, their indices in the split as read or ``None``); ``None``: no such role.

        A carved validation set holds no malformed lines: they count in the training part's report.
        """
        source = self.validation_source
        if role == "val" and source == "none":
            return None
        if role == "val" and source == "test_split":
            return self._load(str(self.test_split)), None
        if source == "file":  # evaluation of a whole file: it is no training split
            return (self._load(self.train_split), None) if role == "val" else None
        loaded = self._load(self.train_split)
        if source != "val_size":
            return loaded, None
        (train, train_rows), (val, val_rows) = carve_validation(loaded.rows, self.val_size, self.seed)
        if role == "train":
            return replace(loaded, rows=train), train_rows
        return SplitRows(val, loaded.name), val_rows

    def _fingerprint(self, rows: datasets.Dataset, columns: dict[str, str], layout: str) -> str:
        if self._tokenizer_digest is None:
            self._tokenizer_digest = cache.tokenizer_digest(self.tokenizer)
        return cache.fingerprint(
            {
                "rows": rows._fingerprint,
                "columns": columns,
                "layout": layout,
                "tokenizer": self._tokenizer_digest,
                "chat_template": self.tokenizer.chat_template,
                "truncation": asdict(self.truncation),
                "bos_policy": self.bos_policy,
                "special_text": self.special_text,
                "code": cache.code_digest(),
            }
        )

    def _prepare(self, role: str) -> tuple[datasets.Dataset, dict[str, Any]] | None:
        """The tokenised pairs of ``role`` and its report, from the cache or freshly built (then cached).

        Raises:
            ValueError: a BOS violation under ``bos_policy=error``, or too many dropped rows.
        """
        found = self._rows(role)
        if found is None:
            return None
        loaded, source_rows = found
        rows, split = loaded.rows, loaded.name
        columns = resolve_columns(rows.column_names, self.columns)
        renamed = rows.select_columns(list(columns.values())).rename_columns(
            {name: field for field, name in columns.items() if name != field}
        )
        layout = detect_layout(renamed, {field: field for field in columns})
        key = self._fingerprint(rows, columns, layout)
        cached = cache.load(key) if self.use_cache else None
        if cached is not None:
            pairs, report = cached
            log.info("%s split %r: tokenised pairs loaded from the cache %s", role, split, cache.entry_dir(key))
        else:
            pairs, report = self._tokenize(renamed, source_rows, split, layout, loaded.line_drops())
            if self.use_cache:
                cache.save(key, pairs, report)
        report = {**report, "role": role, "cache": {"fingerprint": key, "hit": cached is not None},
                  "rows_fingerprint": rows._fingerprint}  # fmt: skip  (the rows as read: content, split, carve-out)
        if loaded.files:  # a split read from several files (shards, a glob): rows read per file
            report["files"] = loaded.files
        check_rows_left(report, self.dataset)
        check_drop_fraction(report, self.max_drop_fraction, self.dataset)
        return pairs, report

    def _tokenize(
        self,
        rows: datasets.Dataset,
        source_rows: list[int] | None,
        split: str,
        layout: str,
        line_drops: dict[str, list[int | str]],
    ) -> tuple[datasets.Dataset, dict[str, Any]]:
        encoder = PairEncoder(self.tokenizer, self.truncation, layout, self.bos_policy, self.special_text)
        encoded = rows.map(
            encoder,
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            num_proc=self.num_proc,
            remove_columns=rows.column_names,
            load_from_cache_file=False,
            desc=f"tokenising {split} ({layout})",
        )
        stats = encoded.select_columns(list(STATS)).to_dict()
        report = split_report(stats, source_rows, split=split, layout=layout, bos_policy=self.bos_policy,
                              line_drops=line_drops, special_text=self.special_text)  # fmt: skip
        kept = [i for i, reason in enumerate(encoded["drop_reason"]) if not reason]
        if self.special_text == "refuse":
            check_special_text(report, split, self.dataset)
        if self.bos_policy == "error" and self.tokenizer.bos_token_id is not None:
            self._check_single_bos(rows, encoded, kept, source_rows, split)
        with no_progress_bars():
            pairs = encoded.select(kept).select_columns(TOKEN_COLUMNS).flatten_indices()
        return pairs, report

    def _check_single_bos(
        self,
        rows: datasets.Dataset,
        encoded: datasets.Dataset,
        kept: list[int],
        source_rows: list[int] | None,
        split: str,
    ) -> None:
        flags = encoded.select_columns(["bos_extra", "bos_in_text"]).to_dict()
        offending = [i for i in kept if flags["bos_extra"][i]]
        if not offending:
            return
        source = source_rows if source_rows is not None else range(len(rows))
        raise UserError(
            diagnose(
                self.tokenizer,
                split,
                len(rows),
                [source[i] for i in offending],
                [source[i] for i in offending if flags["bos_in_text"][i]],
                rows[offending[0]],
                encoded[offending[0]]["chosen_input_ids"],
            )
        )

    # ---- Lightning hooks ----

    def prepare_data(self) -> None:
        """Tokenise (and cache) every split once per node, before ``setup`` runs in each process."""
        for role in ("train", "val"):
            if role not in self.splits and role not in self._prepared:
                self._prepared[role] = self._prepare(role)
        self._loaded.clear()

    def setup(self, stage: str | None = None) -> None:
        """Load (from ``prepare_data`` or the cache) or build the splits of ``stage``; write the report."""
        self.load(stage)
        if self._unpublished:
            self._publish_report()
            self._unpublished = False

    def load(self, stage: str | None = None) -> None:
        """Load or build the splits of ``stage`` and check them (every data error is raised here), writing nothing:
        ``train.py`` calls it before it writes into the run directory; ``setup`` then only publishes the report."""
        roles = ["val"] if stage == "validate" else ["train", "val"]
        built = []
        for role in roles:
            if role in self.splits:
                continue
            prepared = self._prepared.pop(role) if role in self._prepared else self._prepare(role)
            if prepared is None:
                continue
            self.splits[role], self.report["splits"][role] = prepared
            log.info(
                "%s split %r: %d pairs (%s layout)", role, prepared[1]["split"], len(prepared[0]), prepared[1]["layout"]
            )
            built.append(role)
            if self.max_tokens_per_batch is not None:
                self._plan(role)
        self._loaded.clear()
        self._log_validation(built)
        self._unpublished = self._unpublished or bool(built)

    def set_collator(self, collator: Any) -> None:
        """Batch with ``collator`` (a wrapper of ``self.collator``, e.g. the reference's, which adds KTO's
        pseudo-pairs), before any loader is built; micro-batches already planned under the token budget are planned
        again with it, so the collator that runs is the one the budget counts."""
        self.collator = collator
        for role in list(self.micro_batches):
            self._plan(role, again=True)

    def _plan(self, role: str, again: bool = False) -> None:
        """Plan the micro-batches of ``role`` under the token budget (a pair over the budget raises here), counting
        the pairs the collator adds (``added_pair_lengths``)."""
        split = self.splits[role]
        budget = TokenBudget(self.max_tokens_per_batch, self.collator, pair_lengths(split),
                             self.collator.added_pair_lengths(split))  # fmt: skip
        batches = plan_micro_batches(budget, self.seed)
        unchanged = again and self.micro_batches[role][0] == batches  # the new collator adds no pairs
        self.micro_batches[role] = (batches, budget)
        if not unchanged:
            note = " (planned again: counting the pairs the collator adds, KTO's pseudo-pairs)" if again else ""
            log.info("%s split: %s%s", role, describe(batches, budget), note)

    def _log_validation(self, built: list[str]) -> None:
        """Say where validation comes from (once, with the split that decides it) when it is not a test split."""
        if self.validation_source == "file":
            if "val" in built:
                log.info(
                    "data.dataset=%s is a single file: validating on all %d rows of it (whole_file_validation; no "
                    "training split)",
                    self.dataset,
                    self.report["splits"]["val"]["read"],
                )
            return
        if "train" not in built:
            return
        if self.single_file:
            how = (
                f"validating on a seeded carve-out of {self.report['splits']['val']['read']} rows "
                f"(data.val_size={self.val_size}, seed={self.seed}; training never sees them)"
                if "val" in self.splits
                else "no validation (set data.val_size=0.05 to carve one)"
            )
            files = self.report["splits"]["train"].get("files")
            what = f"one split of {len(files)} files" if files else "a single file"
            log.info("data.dataset=%s is %s: training on it; %s", self.dataset, what, how)
        elif self.validation_source == "none":
            log.warning(
                "no validation: data.test_split and data.val_size are null, so training runs without validation "
                "(set data.val_size to carve a validation set out of %r)",
                self.train_split,
            )

    def _publish_report(self) -> None:
        self.report["validation"] = self.validation_source
        self.report["settings"] = {
            "dataset": str(self.dataset),
            "single_file": self.single_file,
            **asdict(self.truncation),
            "bos_policy": self.bos_policy,
            "special_text": self.special_text,
            "columns": self.columns,
            "val_size": self.val_size,
            "max_drop_fraction": self.max_drop_fraction,
            "max_tokens_per_batch": self.max_tokens_per_batch,
            "batch_layout": self.collator.layout,
            "batch_layout_chosen_by": self.layout_choice or "data.layout",
        }
        log.info("data report%s:\n%s", f" ({self.report_dir / REPORT_NAME})" if self.report_dir else "",
                 format_table(self.report))  # fmt: skip
        if self.report_dir is not None and self.trainer_is_global_zero():
            write_report(self.report_dir / REPORT_NAME, self.report)

    def trainer_is_global_zero(self) -> bool:
        """Whether this process writes shared files (true without a trainer)."""
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero

    # ---- loaders and state ----

    def _loader(self, role: str, shuffle: bool) -> ResumableDataLoader:
        micro_batches, budget = self.micro_batches.get(role, (None, None))
        trainer = getattr(self, "trainer", None)
        return ResumableDataLoader(
            self.splits[role],
            batch_size=self.batch_size,
            seed=self.seed,
            shuffle=shuffle,
            micro_batches=micro_batches,
            accumulate=trainer.accumulate_grad_batches if trainer is not None and role == "train" else 1,
            budget=budget,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.splits:
            raise UserError(
                f"no training split: data.dataset={self.dataset} is a single file validated on whole "
                "(whole_file_validation=True is for evaluation)"
            )
        loader = self._loader("train", shuffle=True)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (epoch, batches done) and the training rows' fingerprint (a resume on
        other data is refused: ``simpo.runs.resume.check_resume_matches``), saved in every checkpoint.

        Lightning restores the data module before it builds the loaders, so the position is applied
        however early the loader is first built (``estimated_stepping_batches`` builds it before the loops
        are restored, which is why the loader's own state alone is not enough).
        """
        if self._train_loader is None:
            return {}
        state: dict[str, Any] = {"train_loader": self._train_loader.state_dict()}
        rows = self.report["splits"].get("train", {}).get("rows_fingerprint")
        if rows is not None:
            state["train_rows"] = rows
        return state

    @property
    def train_rows_fingerprint(self) -> str | None:
        """The training rows' fingerprint (after ``load``): the file's content, the split and any carve-out."""
        return self.report["splits"].get("train", {}).get("rows_fingerprint")

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        loader_state = state.get("train_loader")
        if self._train_loader is not None and loader_state is not None:
            # Sharded strategies restore after setup, once the (not yet iterated) loader exists.
            self._train_loader.load_state_dict(loader_state)
        else:
            self._train_loader_state = loader_state

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if "val" in self.splits else []
