"""Measure a trained policy: ``python evaluate.py model.name_or_path=<hf dir> tasks=[preference,generate,judge]``.

compose config -> load the policy (an ``hf/`` export, any HF model, or a ``train.py`` checkpoint) -> run the
tasks -> ``metrics.json``, ``report.md`` and plots in the run directory, and a table on the console.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from data.collate import choose_layout
from simpo.config.entrypoint import (
    build,
    build_loss,
    register_resolvers,
    silence_library_noise,
    user_errors_as_messages,
)
from simpo.core.device import resolve_device
from simpo.errors import UserError
from simpo.evaluation.generation import answer, check_prompts
from simpo.evaluation.judge import compare
from simpo.evaluation.plots import reward_histogram, training_curves
from simpo.evaluation.preference import pair_rewards, preference_metrics
from simpo.evaluation.prompt_sets import Format, Prompt, load_prompts, read_answers, write_answers
from simpo.evaluation.reference_source import evaluation_reference
from simpo.evaluation.report import markdown_table, write_metrics, write_report
from simpo.evaluation.settings import validate_settings
from simpo.loading.policy_source import LoadedPolicy, load_policy
from simpo.loading.reward import RewardModel
from simpo.models import decoding as dec
from simpo.objectives import Objective
from simpo.reference.build import install_reference_collator
from simpo.reference.provider import ReferencePlacement
from simpo.runs.lock import RunDirLock
from simpo.scoring import Scorer

log = logging.getLogger("evaluate")
register_resolvers()
silence_library_noise()


@dataclass
class Inputs:
    """What the tasks read besides the policy, loaded and checked before any task runs.

    Attributes:
        fmt, prompts: the format and every question of ``generate.prompts`` (``None`` when unset).
        reward_model: the judge's reward model, on the CPU until the judge runs (``None`` without ``judge``).
        outputs, baseline: the judge's answer files, by prompt key (``outputs`` is ``None`` when this run's
            ``generate`` task writes them).
    """

    fmt: Format | None = None
    prompts: list[Prompt] | None = None
    reward_model: RewardModel | None = None
    outputs: dict[str, str] | None = None
    baseline: dict[str, str] | None = None


def load_inputs(cfg: DictConfig) -> Inputs:
    """The prompt set (every row checked) and the judge's reward model and answer files, before any task runs."""
    inputs = Inputs()
    if cfg.generate.prompts is not None and ("generate" in cfg.tasks or "judge" in cfg.tasks):
        inputs.fmt, inputs.prompts = load_prompts(cfg.generate.prompts, cfg.generate.split, cfg.generate.format)
    if "judge" in cfg.tasks:
        j = cfg.judge
        inputs.reward_model = RewardModel(j.reward_model, j.trust_remote_code)
        inputs.baseline = read_answers(j.baseline, "judge.baseline")
        inputs.outputs = read_answers(j.outputs, "judge.outputs") if j.outputs else None
    return inputs


def run_preference(
    cfg: DictConfig, policy: LoadedPolicy, loss: Objective, run_dir: Path, layout: tuple[str, str]
) -> tuple[dict, list]:
    """The implicit-reward metrics on held-out pairs, and the reward histogram; ``layout``: the batch layout the
    policy was loaded for and why (``choose_layout``)."""
    layout, why = layout
    datamodule = build(cfg.data, tokenizer=policy.tokenizer, whole_file_validation=True, layout=layout,
                       layout_choice=why)  # fmt: skip
    datamodule.setup("validate")
    if "val" not in datamodule.splits:
        raise UserError(
            "the preference task needs pairs: set data.test_split, data.val_size, or data.dataset to a single file"
        )
    reference = evaluation_reference(loss, cfg.reference.name_or_path, policy.training_config, policy.tokenizer,
                                     cfg.model.dtype, cfg.model.attn_implementation, layout)  # fmt: skip
    if reference is not None:
        install_reference_collator(datamodule, loss, datamodule.truncation.max_length)
    scorer = Scorer(cfg.model.chunk_size)
    scorer.attach(policy.model)
    if reference is not None:
        device = next(policy.model.parameters()).device
        reference.prepare(ReferencePlacement(scorer, policy.model, lambda model: model.to(device), device))
    pairs = pair_rewards(scorer, policy.model, loss, datamodule.val_dataloader(), reference, cfg.preference.max_pairs)
    metrics = preference_metrics(pairs, loss, cfg.preference.length_buckets)
    return metrics, [reward_histogram(pairs, run_dir / "reward_histogram.png")]


def run_generate(
    cfg: DictConfig, policy: LoadedPolicy, fmt: Format, prompts: list[Prompt], run_dir: Path
) -> tuple[dict, Path]:
    """Answers to a benchmark prompt set (already checked), written where the benchmark's tool reads them."""
    g = cfg.generate
    name = g.name or policy.name
    family = dec.model_family(policy.model.config, name)
    decodings = [
        dec.decoding_for(
            family, fmt, p.category, policy.tokenizer.eos_token_id, g.temperature, g.top_p, g.max_new_tokens
        )
        for p in prompts
    ]
    model_dir = Path(cfg.model.name_or_path) if cfg.model.name_or_path else None
    answers, lens = answer(policy.model, policy.tokenizer, prompts, decodings, g.batch_size, g.backend, model_dir)
    path = write_answers(prompts, answers, fmt, name, run_dir, lens)
    tokens = [n for per_prompt in lens for n in per_prompt]
    metrics = {"generate/prompts": float(len(prompts)), "generate/mean_new_tokens": sum(tokens) / len(tokens)}
    log.info("wrote %d answers (%s, family %s) to %s", len(prompts), fmt, family, path)
    return metrics, path


def run_judge(cfg: DictConfig, inputs: Inputs, generated: Path | None) -> dict[str, float]:
    """Win rate of ``judge.outputs`` (or this run's answers) against ``judge.baseline`` by a reward model."""
    assert inputs.reward_model is not None and inputs.baseline is not None  # load_inputs, for tasks=[judge]
    answers = inputs.outputs if inputs.outputs is not None else read_answers(str(generated), "judge.outputs")
    prompts = {key: key for key in answers}  # AlpacaEval answers are keyed by their instruction
    if inputs.prompts is not None:
        alpaca = inputs.fmt == "alpaca_eval"
        prompts.update({p.turns[0] if alpaca else p.key: p.turns[0] for p in inputs.prompts})
    reward_model = inputs.reward_model.to(resolve_device(cfg.device))
    scores = compare(reward_model, prompts, answers, inputs.baseline, cfg.judge.length_tolerance)
    return {f"judge/{key}": value for key, value in scores.items()}


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.tasks``; returns the flat metrics also written to ``metrics.json``.

    Every input is checked before any task runs and before any file is written: the settings, the prompt set,
    the reward model and the policy (NaN/Inf weights, a missing or truncated source are errors naming the key). The
    output directory is held (``simpo.runs.lock``) from the first check to the last write: a second evaluation
    started on it meanwhile is refused, naming this one.
    """
    with RunDirLock(Path(cfg.run_dir)):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    """``evaluate`` inside its directory's lock."""
    validate_settings(cfg)
    if (Path(cfg.run_dir) / "status.json").is_file():
        raise UserError(
            f"hydra.run.dir={cfg.run_dir} holds a training run: evaluate.py writes its own files (metrics.json, "
            "report.md, data_report.json, plots), so give it a directory of its own"
        )
    if (Path(cfg.run_dir) / "metrics.json").is_file() and not cfg.get("overwrite", False):
        raise UserError(
            f"hydra.run.dir={cfg.run_dir} holds an earlier evaluation (metrics.json): give this one another directory, "
            "or replace it with overwrite=true"
        )
    torch.manual_seed(cfg.seed)
    inputs = load_inputs(cfg)
    m = cfg.model
    device = resolve_device(cfg.device)
    layout = ("padded", "generation only")  # the preference task's layout decides the attention kernel (auto)
    if "preference" in cfg.tasks:
        layout = choose_layout(str(cfg.data.layout), device, str(m.attn_implementation))
    policy = load_policy(m.name_or_path, cfg.ckpt_path, m.tokenizer, m.dtype, m.attn_implementation, layout[0])
    generate_prompts = inputs.prompts[: cfg.generate.limit] if inputs.prompts is not None else []
    if "generate" in cfg.tasks:
        check_prompts(policy.tokenizer, generate_prompts)
    policy.model.to(device)
    loss_cfg: dict[str, Any] = OmegaConf.to_container(cfg.loss, resolve=True)  # type: ignore[assignment]
    stored_in = None
    if policy.training_config is not None:  # the checkpoint's own objective and settings
        loss_cfg, stored_in = dict(policy.training_config["loss"]), f"the training config of ckpt_path={cfg.ckpt_path}"
    loss = build_loss(loss_cfg, stored_in)

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    images: list[Path] = []
    generated = None
    if "preference" in cfg.tasks:
        found, plots = run_preference(cfg, policy, loss, run_dir, layout)
        metrics.update(found)
        images += plots
    if "generate" in cfg.tasks:
        found, generated = run_generate(cfg, policy, inputs.fmt, generate_prompts, run_dir)  # type: ignore[arg-type]
        metrics.update(found)
    if "judge" in cfg.tasks:
        metrics.update(run_judge(cfg, inputs, generated))
    if cfg.training_logs:
        images.append(training_curves(Path(cfg.training_logs), run_dir / "training_curves.png"))

    settings = OmegaConf.to_container(cfg, resolve=True)
    meta = {"model": policy.name, "data": cfg.data.dataset, "settings": settings, "loss": loss_cfg}
    write_metrics(run_dir, metrics, meta)
    notes = [f"model: {policy.name}", f"tasks: {', '.join(cfg.tasks)}", f"data: {cfg.data.dataset}",
             "objective: " + ", ".join(f"{k} {v}" for k, v in loss_cfg.items())]  # fmt: skip
    if generated is not None:
        notes.append(f"answers: {generated.relative_to(run_dir)}")
    write_report(run_dir, "Evaluation", metrics, notes, images)
    print(markdown_table(metrics))
    log.info("wrote %s and %s", run_dir / "metrics.json", run_dir / "report.md")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; an error that names its cause ends the process with that one line and status 1."""
    with user_errors_as_messages(log):
        evaluate(cfg)


if __name__ == "__main__":
    main()
