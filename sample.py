"""Build on-policy preference data: ``python sample.py [key=value ...]`` (``conf/sample.yaml``).

compose config -> prompts (deduplicated, sorted by id, single BOS checked) -> generate k responses per prompt with
the policy -> score each with a reward model -> binarize (chosen = best, rejected = worst) -> ``train_prefs.jsonl``,
``test_prefs.jsonl``, ``report.json`` and ``report.png`` in ``output_dir``, which ``python train.py
data.dataset=<output_dir>`` trains on. Each stage writes atomic shards and skips finished ones, so the same command
resumes after a crash; processes started with ``RANK`` / ``WORLD_SIZE`` (torchrun) split the shards. SIGINT (Ctrl-C)
or SIGTERM stops at once, dropping the shard in flight whole, logs how to resume and exits with 128 + the signal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from simpo.config.entrypoint import register_resolvers, silence_library_noise, user_errors_as_messages
from simpo.core.device import resolve_device
from simpo.errors import UserError
from simpo.loading.reward import RewardModel
from simpo.models.policy import resolve_dtype
from simpo.runs.lock import RunDirLock
from simpo.sampling.binarize import binarize, split_pairs, write_splits
from simpo.sampling.engines import Engine, HFEngine, VllmEngine, resolve_backend
from simpo.sampling.generate import GenerateSettings, Throughput, run_generate, stop_token_ids
from simpo.sampling.policy import sampling_policy
from simpo.sampling.prompts import PromptSet, load_prompts, prompt_token_ids
from simpo.sampling.report import stage_totals, summary_lines, write_report
from simpo.sampling.score import Scorer, run_score
from simpo.sampling.settings import check_sample_config, decoding
from simpo.sampling.shards import (
    MANIFEST,
    ShardPlan,
    ShardStore,
    check_manifest,
    check_output_dir_owned,
    process_rank,
    write_json_atomic,
)
from simpo.sampling.stop import GracefulStop, SamplingInterrupted, deferred

log = logging.getLogger("sample")
register_resolvers()
silence_library_noise()


def digest(text: str | None) -> str | None:
    """A short hash of a chat template (the manifest compares templates by it)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else None


@dataclass
class Prepared:
    """Everything a run needs, loaded and checked; nothing written yet.

    Attributes:
        stages: the stages to run, in pipeline order.
        prompt_set, plan: the prompts and how they are sharded (this process's rank and world).
        manifest: what ``manifest.json`` will hold.
        policy, tokenizer, prompt_ids, settings, backend: the generate stage's inputs (ids by prompt index for the
            shards still to generate).
        reward: the score stage's reward model.
    """

    stages: tuple[str, ...]
    prompt_set: PromptSet
    plan: ShardPlan
    manifest: dict[str, Any] = field(default_factory=dict)
    policy: PreTrainedModel | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    prompt_ids: dict[int, list[int]] = field(default_factory=dict)
    settings: GenerateSettings | None = None
    backend: str = "hf"
    reward: RewardModel | None = None


def prepare_generate(cfg: DictConfig, run: Prepared, generated: ShardStore) -> dict[str, Any]:
    """Load the policy and tokenise the prompts still to generate (single BOS); returns the manifest section."""
    run.policy, run.tokenizer, _ = sampling_policy(cfg.model, cfg.seed, cfg.generate.chat_template)
    indices = [i for shard in generated.missing(run.plan.mine()) for i in range(*run.plan.bounds(shard))]
    prompts = run.prompt_set.prompts
    run.prompt_ids = dict(zip(indices, prompt_token_ids(run.tokenizer, [prompts[i] for i in indices]), strict=True))
    stops = stop_token_ids(run.tokenizer, run.policy.generation_config.eos_token_id)
    context = getattr(run.policy.config, "max_position_embeddings", None)
    run.settings = GenerateSettings(tuple(cfg.generate.seeds[: cfg.generate.num_samples]), decoding(cfg, stops),
                                    context)  # fmt: skip
    too_long = sum(len(ids) >= context for ids in run.prompt_ids.values()) if context else 0
    if too_long:
        log.warning("%d of the %d prompts to generate are %d tokens or longer, the policy's context "
                    "(max_position_embeddings): their responses run past the positions it was trained on (counted as "
                    "prompts_over_context in report.json; prompts.limit or another prompt set leaves them out)",
                    too_long, len(run.prompt_ids), context)  # fmt: skip
    run.backend = resolve_backend(cfg.generate.backend, cfg.model.name_or_path is not None)
    d = run.settings.decoding
    return {
        "model": cfg.model.name_or_path or OmegaConf.to_container(cfg.model.architecture),
        "init_seed": cfg.seed if cfg.model.name_or_path is None else None,
        "tokenizer": cfg.model.tokenizer,
        "dtype": cfg.model.dtype,
        "chat_template": digest(run.tokenizer.chat_template),
        "seeds": list(run.settings.seeds),
        "temperature": d.temperature,
        "top_p": d.top_p,
        "max_new_tokens": d.max_new_tokens,
        "stop_token_ids": list(d.stop_token_ids),
        "backend": run.backend,
    }


def prepare_score(cfg: DictConfig, run: Prepared) -> dict[str, Any]:
    """Load and check the reward model; returns the manifest section."""
    r = cfg.reward_model
    run.reward = RewardModel(
        r.name_or_path,
        r.trust_remote_code,
        key="reward_model.name_or_path",
        dtype=resolve_dtype(r.dtype, key="reward_model.dtype"),
    )
    if not run.reward.tokenizer.chat_template:
        raise UserError(f"reward_model.name_or_path={r.name_or_path}: its tokenizer has no chat template")
    return {
        "reward_model": r.name_or_path,
        "trust_remote_code": r.trust_remote_code,
        "dtype": r.dtype,
        "max_length": r.max_length,
        "chat_template": digest(run.reward.tokenizer.chat_template),
    }


def prepare(cfg: DictConfig) -> Prepared:
    """Check the keys, read the prompts, load the models and compare with the shards already in ``output_dir``.

    Raises:
        ValueError, FileNotFoundError: naming the key to change.
    """
    stages = check_sample_config(cfg)
    check_output_dir_owned(Path(cfg.output_dir))  # before anything is read or written
    resolve_device(cfg.device)
    rank, world = process_rank()
    p = cfg.prompts
    prompt_set = load_prompts(p.dataset, p.split, p.column, p.limit)
    run = Prepared(stages, prompt_set, ShardPlan(len(prompt_set.prompts), cfg.shards.size, rank, world))
    output_dir = Path(cfg.output_dir)
    generated, scored = ShardStore(output_dir, "generate"), ShardStore(output_dir, "score")
    sections: dict[str, dict[str, Any]] = {
        "prompts": {
            "dataset": p.dataset,
            "split": p.split,
            "column": p.column,
            "limit": p.limit,
            "count": len(prompt_set.prompts),
            "fingerprint": prompt_set.fingerprint,
            "shard_size": cfg.shards.size,
        }
    }
    check_manifest(output_dir, sections)  # each stage's settings are compared as soon as known: fail early
    if "generate" in stages:
        sections["generate"] = prepare_generate(cfg, run, generated)
        check_manifest(output_dir, sections)
    if "score" in stages:
        sections["score"] = prepare_score(cfg, run)
        if "generate" not in stages and generated.missing(scored.missing(run.plan.mine())):
            raise UserError(
                f"stages={list(stages)}: output_dir={output_dir} lacks generated shards to score: run the generate "
                "stage first (stages=[generate,score,binarize])"
            )
    if stages == ("binarize",) and scored.missing(list(range(run.plan.num_shards))):
        raise UserError(f"stages=[binarize]: output_dir={output_dir} lacks scored shards: run generate, score first")
    run.manifest = check_manifest(output_dir, sections)
    return run


def build_engine(cfg: DictConfig, run: Prepared, device: str, progress: Throughput | None) -> Engine:
    """The generation engine of ``run.backend`` (the policy moved to ``device`` for Hugging Face generate)."""
    on_batch = progress.update if progress is not None else None
    if run.backend == "vllm":
        run.policy = None  # vLLM loads its own copy
        return VllmEngine(cfg.model.name_or_path, cfg.model.dtype, on_batch)
    tokenizer, stops = run.tokenizer, run.settings.decoding.stop_token_ids
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    return HFEngine(run.policy.to(device), pad, cfg.generate.batch_size, on_batch)


def finish(cfg: DictConfig, run: Prepared) -> dict[str, Any]:
    """Binarize every scored shard, write the splits and the report; returns the report."""
    output_dir, plan, prompt_set = Path(cfg.output_dir), run.plan, run.prompt_set
    generated, scored = ShardStore(output_dir, "generate"), ShardStore(output_dir, "score")
    shards = list(scored.read_all(plan))
    rows = [row for shard in shards for row in shard["rows"]]
    result = binarize(rows, float(cfg.binarize.min_margin))
    splits = split_pairs(result.pairs, cfg.binarize.test_size, cfg.seed) if result.pairs else {}
    report = {
        "prompts": {
            "dataset": cfg.prompts.dataset,
            "split": cfg.prompts.split,
            "rows_read": prompt_set.rows_read,
            "duplicates": prompt_set.duplicates,
            "unusable": prompt_set.unusable,
            "prompts": len(prompt_set.prompts),
            "shards": plan.num_shards,
        },
        "generate": stage_totals(shard["stats"] for shard in generated.read_all(plan)),
        "score": stage_totals(shard["stats"] for shard in shards),
        "binarize": {
            "prompts": len(rows),
            "kept": len(result.pairs),
            "dropped": dict(result.dropped),
            "min_margin": float(cfg.binarize.min_margin),
            **{name: len(pairs) for name, pairs in splits.items()},
        },
    }
    all_scores = [response["score"] for row in rows for response in row["responses"]]
    with deferred():  # a stop signal waits until the report and both splits are written
        write_report(output_dir, report, result.pairs, all_scores)
        if result.pairs:
            write_splits(output_dir, splits)
    truncated_ties = result.dropped["truncated_tie"]
    scored = report["score"]
    cut = (f"the reward model saw {scored.get('truncated', 0):.0f} conversations cut at "
           f"reward_model.max_length={cfg.reward_model.max_length} tokens ({scored.get('response_lost', 0):.0f} "
           "of them with none of the response left)")  # fmt: skip
    if not result.pairs and truncated_ties:
        raise UserError(
            f"no prompt kept a pair: {truncated_ties} of {len(rows)} prompts tied because {cut}, so their scores say "
            f"nothing of the responses (see {output_dir / 'report.json'}). Raise reward_model.max_length to the "
            "reward model's context (prompt + generate.max_new_tokens), then rerun with stages=[score,binarize]"
        )
    if not result.pairs:
        raise UserError(
            f"no prompt kept a pair (dropped: {dict(result.dropped)}; see {output_dir / 'report.json'}): the reward "
            "model cannot tell the responses apart, or the samples are all alike (raise generate.temperature)"
        )
    if truncated_ties:
        log.warning("%d prompts were dropped as truncated_tie: %s; raise reward_model.max_length to keep them",
                    truncated_ties, cut)  # fmt: skip
    for line in summary_lines(report):
        log.info(line)
    log.info("wrote %s: train with `python train.py data.dataset=%s`", output_dir, output_dir)
    return report


def sample(cfg: DictConfig) -> dict[str, Any] | None:
    """Run ``cfg.stages``; returns the report when this process binarized, else ``None``.

    Every input is checked before anything is written (``prepare``): the keys, the prompts (single BOS), the
    policy, the reward model, and that the shards already in ``output_dir`` were made with the same settings.

    Raises:
        SamplingInterrupted: SIGINT or SIGTERM arrived (exit status 128 + signal); the shard in flight was dropped
            whole, and the same call again resumes (logged with the shards done).
    """
    # output_dir is held by one command at a time (the processes of one torchrun job share it; rank 0 holds it)
    with GracefulStop(), RunDirLock(Path(cfg.output_dir), is_writer=process_rank()[0] == 0, key="output_dir"):
        try:
            return run_stages(cfg)
        except SamplingInterrupted as stop:
            log.warning("%s: stopped; %s. The shard in progress was dropped whole (no partial file); run the same "
                        "command again to resume (finished shards are skipped)", stop, shards_done(cfg))  # fmt: skip
            raise


def shards_done(cfg: DictConfig) -> str:
    """``generate 3/12 shards, score 0/12`` for ``cfg.output_dir`` (what a stopped run leaves for the rerun)."""
    output_dir = Path(cfg.output_dir)
    manifest = output_dir / MANIFEST
    if not manifest.is_file():
        return f"nothing written to output_dir={output_dir} yet"
    prompts = json.loads(manifest.read_text())["prompts"]
    total = ShardPlan(prompts["count"], prompts["shard_size"]).num_shards
    stores = [ShardStore(output_dir, stage) for stage in ("generate", "score")]
    done = {store.stage: len(list(store.directory.glob("shard-*.json"))) for store in stores}
    return ", ".join(f"{stage} {count}/{total} shards" for stage, count in done.items())


def run_stages(cfg: DictConfig) -> dict[str, Any] | None:
    """``sample`` without the signal handling."""
    run = prepare(cfg)
    device = resolve_device(cfg.device)
    output_dir, plan = Path(cfg.output_dir), run.plan
    generated, scored = ShardStore(output_dir, "generate"), ShardStore(output_dir, "score")
    output_dir.mkdir(parents=True, exist_ok=True)  # the first write
    write_json_atomic(output_dir / MANIFEST, run.manifest)
    where = f"rank {plan.rank}/{plan.world}"
    if "generate" in run.stages:
        pending = len(run.prompt_ids) * len(run.settings.seeds)
        progress = Throughput(pending, f"generate ({where})") if pending else None
        engine = build_engine(cfg, run, device, progress)
        run_generate(engine, run.tokenizer, run.prompt_set.prompts, run.prompt_ids, run.settings, plan, generated,
                     progress)  # fmt: skip
        del engine
        run.policy = None
        if device == "cuda":
            torch.cuda.empty_cache()
    if "score" in run.stages:
        scorer = Scorer(run.reward.to(device), cfg.reward_model.batch_size, cfg.reward_model.max_length)
        pending = sum(len(range(*plan.bounds(s))) for s in scored.missing(plan.mine())) * cfg.generate.num_samples
        progress = Throughput(pending, f"score ({where})", unit="conversation") if pending else None
        run_score(scorer, plan, generated, scored, progress)
    if "binarize" not in run.stages:
        return None
    missing = scored.missing(list(range(plan.num_shards)))
    if missing:
        log.info("%s done; %d shards of other ranks are not scored yet: the last rank to finish binarizes (or run "
                 "stages=[binarize] later)", where, len(missing))  # fmt: skip
        return None
    return finish(cfg, run)


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; an error that names its cause ends the process with that one line and status 1; a stop
    signal logs the command that resumes and exits with 128 + its number (130 SIGINT, 143 SIGTERM)."""
    with user_errors_as_messages(log):
        try:
            sample(cfg)
        except SamplingInterrupted:
            overrides = " ".join(shlex.quote(o) for o in HydraConfig.get().overrides.task)
            log.warning("resume with: python sample.py %s", overrides)
            raise


if __name__ == "__main__":
    main()
