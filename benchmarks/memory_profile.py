"""Where a training step's memory goes: a profile of one optimizer step inside a real ``python train.py`` process.

    python benchmarks/memory_profile.py --layouts padded,shared_prompt      # the issue-34 harness (Mistral shape)
    python benchmarks/memory_profile.py --preset llama3 --layouts padded
    python benchmarks/memory_profile.py --tiny --layouts padded             # smoke test

The harness is ``benchmarks/whole_process_vs_trl.py``'s (the same model directory, rows and train.py overrides:
4 pairs per step, fp32, CPU, sdpa); each layout is one ``train.py`` process under ``/usr/bin/time -v`` with the
``MemoryProfile`` callback below (``+callbacks.memory``), which profiles optimizer step ``--step`` (default 2: the
AdamW state exists by then) and records, in MiB:

- ``parameters``, ``gradients``, ``optimizer state``: the bytes of the tensors themselves;
- ``saved activations`` by layer type, at the end of the forward pass (their peak): every tensor autograd keeps for
  the backward pass (``torch.autograd.graph.saved_tensors_hooks``, storages counted once) other than the parameters
  themselves (a Linear keeps its weight: no extra memory), attributed to the innermost module running when it was
  saved (attention, MLP, norms, embedding, the decoder layer's residual adds, the rest of the model body) or,
  outside the model's modules, to the head and the loss (the labelled-token head of ``model.chunk_size``); in
  attention, the (B, heads, T, T) tensors, i.e. the attention probabilities that SDPA's math kernel keeps on CPU,
  are their own row;
  The hooks do not see what an activation-checkpointed layer keeps (its checkpoint holds it), so the driver runs
  with ``model.gradient_checkpointing=false`` (the default ``auto`` is ``selective`` on CPU) unless ``--override``
  sets it: the profile is of what autograd saves without checkpointing;
- ``batch``: the collated batch's tensors;
- resident memory (``VmRSS``) at the start of training, after the forward pass, after the backward pass and after
  the optimizer step, and the process's high-water mark (``VmHWM``) after the step and at the end of training;
  ``unaccounted at the step's peak`` = the high-water mark after the step minus everything above and the resident
  memory before the first step that is not parameters (Python, torch, libraries, tokenizer, data): the allocator's
  free lists and the transient buffers of the backward pass (the head's (chunk, V) buffers, gradients of
  activations) that are freed before the step ends; the high-water mark through the last step and after the run's
  end work (the final checkpoint and the Hugging Face export, which run before this callback's ``on_train_end``);
- the process's import cost (``python -c "import train"``, its peak RSS) and the whole run's peak (``/usr/bin/time``).

The table goes to stdout and ``<work dir>/memory_profile.md``; raw numbers to ``<work dir>/memory_profile.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simpo.objectives import OBJECTIVES  # noqa: E402  (the repository root on the path first)

MIB = 2**20
OBJECTIVE_NAMES = frozenset(kind.__name__ for kind in OBJECTIVES.values())


def proc_status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tensor_mib(tensors: Any) -> float:
    """The bytes of ``tensors`` (an iterable of tensors, storages counted once) in MiB."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values()) / MIB


def layer_group(stack: list[str], tensor: torch.Tensor) -> str:
    """The profile row of a saved tensor, from the classes of the modules running when it was saved (``stack``,
    outermost first): the innermost one that names a layer type (a ``Linear`` inside an MLP is the MLP's)."""
    for name in reversed(stack):
        if "Attention" in name:
            square = tensor.dim() == 4 and tensor.shape[-1] == tensor.shape[-2] and tensor.shape[-1] > 1
            return "attention probabilities (B, heads, T, T)" if square else "attention (q, k, v, output, rope)"
        for key, group in (("MLP", "MLP"), ("Norm", "norms"), ("Embedding", "embedding"),
                           ("DecoderLayer", "decoder layer (residual adds)")):  # fmt: skip
            if key in name:
                return group
    body = [name for name in stack if name not in ("SimPOModule",)]
    if not body or body[-1] in OBJECTIVE_NAMES:
        return "head and loss (outside the decoder)"
    return f"model body ({body[-1]})"


class MemoryProfile(L.Callback):
    """Profile optimizer step ``step`` (see the module docstring) and write ``path`` (JSON) at the end of training.

    Added to train.py with ``+callbacks.memory._target_=benchmarks.memory_profile.MemoryProfile
    +callbacks.memory.path=<file>``; it assumes one micro-batch per optimizer step (the harness's setting).
    """

    def __init__(self, path: str, step: int = 2) -> None:
        self.path, self.step = Path(path), step
        self.record: dict[str, Any] = {}
        self._stack: list[str] = []
        self._saved: dict[int, tuple[int, str]] = {}
        self._hooks: Any = None
        self._active = False
        self._parameters: set[int] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        def enter(module: torch.nn.Module, *_: Any) -> None:
            self._stack.append(type(module).__name__)

        def leave(module: torch.nn.Module, *_: Any) -> None:  # returns None: the module's output stays as it is
            self._stack.pop()

        for module in pl_module.modules():
            module.register_forward_pre_hook(enter)
            module.register_forward_hook(leave)
        # weights saved for backward (a Linear keeps its weight) are the parameters themselves, not extra memory
        self._parameters = {p.untyped_storage().data_ptr() for p in pl_module.parameters() if p.device.type != "meta"}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta" and tensor.untyped_storage().data_ptr() not in self._parameters:
            storage = tensor.untyped_storage()
            self._saved.setdefault(storage.data_ptr(), (storage.nbytes(), layer_group(self._stack, tensor)))
        return tensor

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(rss_train_start=proc_status_mib("VmRSS"), hwm_train_start=proc_status_mib("VmHWM"),
                           parameters=tensor_mib(pl_module.parameters()))  # fmt: skip

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._active = trainer.global_step + 1 == self.step
        if self._active:
            self.record.update(batch=tensor_mib(v for v in batch.values() if isinstance(v, torch.Tensor)),
                               rss_before_forward=proc_status_mib("VmRSS"))  # fmt: skip
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
            self._hooks.__enter__()

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self._active and self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
            groups: dict[str, float] = defaultdict(float)
            for nbytes, group in self._saved.values():
                groups[group] += nbytes / MIB
            self.record.update(saved=dict(sorted(groups.items(), key=lambda kv: -kv[1])),
                               rss_after_forward=proc_status_mib("VmRSS"))  # fmt: skip

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._active:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            self.record.update(gradients=tensor_mib(grads), rss_after_backward=proc_status_mib("VmRSS"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.record["hwm_last_step"] = proc_status_mib("VmHWM")  # the last step's: before the run's end work
        if self._active:
            states = [v for opt in trainer.optimizers for s in opt.state.values() for v in s.values()]
            self.record.update(optimizer_state=tensor_mib(states), rss_after_step=proc_status_mib("VmRSS"),
                               hwm_after_step=proc_status_mib("VmHWM"))  # fmt: skip
            self._active = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(rss_train_end=proc_status_mib("VmRSS"), hwm_train_end=proc_status_mib("VmHWM"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=1))


# ----------------------------------------------------------------------------------------------- the harness


def import_cost(env: dict[str, str]) -> float:
    """Peak RSS (MiB) of a process that only imports train.py."""
    code = "import resource, train; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def table(runs: dict[str, dict[str, Any]], import_mib: float) -> str:
    """The markdown table of the profiles, one column per layout."""
    layouts = list(runs)
    largest = {g: max(r["saved"].get(g, 0.0) for r in runs.values()) for r in runs.values() for g in r["saved"]}
    groups = sorted(largest, key=lambda g: -largest[g])

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | " + " | ".join(f"{v:,.0f}" for v in values) + " |"

    lines = ["| MiB | " + " | ".join(layouts) + " |", "|---|" + "---:|" * len(layouts)]
    lines.append(row("import train.py (peak RSS)", [import_mib] * len(layouts)))
    lines.append(row("RSS before the first step (floor)", [r["rss_train_start"] for r in runs.values()]))
    for key, label in (("parameters", "parameters"), ("gradients", "gradients"),
                       ("optimizer_state", "optimizer state (AdamW)"), ("batch", "batch")):  # fmt: skip
        lines.append(row(label, [r[key] for r in runs.values()]))
    lines.append(row("saved activations, all", [sum(r["saved"].values()) for r in runs.values()]))
    lines += [row(f"- {group}", [r["saved"].get(group, 0.0) for r in runs.values()]) for group in groups]
    for key, label in (("rss_after_forward", "RSS after the forward pass"),
                       ("rss_after_backward", "RSS after the backward pass"),
                       ("rss_after_step", "RSS after the optimizer step"),
                       ("hwm_after_step", "peak RSS through the profiled step"),
                       ("hwm_last_step", "peak RSS through the last step"),
                       ("hwm_train_end", "peak RSS after the run's end (last checkpoint, export)"),
                       ("wall_peak", "peak RSS of the whole process (/usr/bin/time)")):  # fmt: skip
        lines.append(row(label, [r[key] for r in runs.values()]))
    unaccounted = [r["hwm_after_step"] - (r["rss_train_start"] + r["gradients"] + r["optimizer_state"] + r["batch"]
                                          + sum(r["saved"].values())) for r in runs.values()]  # fmt: skip
    lines.append(row("unaccounted at the step's peak (transients, allocator)", unaccounted))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from benchmarks import whole_process_vs_trl as harness

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(harness.PRESETS), default="mistral")
    parser.add_argument("--layouts", default="padded", help="comma-separated data.layout values (default: padded)")
    parser.add_argument("--step", type=int, default=2, help="the optimizer step profiled (default 2)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer hidden-64 model of the preset (smoke test)")
    parser.add_argument("--work-dir", type=Path, help="where the model, data and runs go (default: a new temp dir)")
    parser.add_argument("--override", action="append", default=[],
                        help="extra key=value for train.py (repeatable), e.g. callbacks.hf_export=null")  # fmt: skip
    args = parser.parse_args(argv)
    harness.require_time_binary()
    preset = harness.PRESETS[args.preset]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="memory_profile_"))
    work.mkdir(parents=True, exist_ok=True)
    steps = max(args.step, 3)
    options = harness.parse_args(["--preset", args.preset, "--steps", str(steps)])
    tokenizer, _ = harness.build_model_dir(preset, args.tiny, options.seed, work / "model")
    harness.build_data_dir(preset, steps * options.batch_size, tokenizer, options.data_seed, work / "data")
    runs: dict[str, dict[str, Any]] = {}
    for layout in [value.strip() for value in args.layouts.split(",") if value.strip()]:
        run_dir, record_file = work / f"run-{layout}", work / f"profile-{layout}.json"
        command = harness.ours_command(options, preset, work / "model", work / "data", run_dir / "out",
                                       work / f"probe-{layout}.json", layout)  # fmt: skip
        # saved_tensors_hooks do not see what a checkpointed layer keeps: profile without checkpointing unless asked
        command += ["model.gradient_checkpointing=false", *args.override,
                    "+callbacks.memory._target_=benchmarks.memory_profile.MemoryProfile",
                    f"+callbacks.memory.path={record_file}", f"+callbacks.memory.step={args.step}"]  # fmt: skip
        measured = harness.run_one(f"ours {layout}", command, run_dir, options.threads, run_dir / "out",
                                   work / f"probe-{layout}.json")  # fmt: skip
        runs[layout] = {**json.loads(record_file.read_text()), "wall_peak": measured["peak_rss_mib"]}
    text = table(runs, import_cost(harness.child_env(options.threads, work / "import")))
    (work / "memory_profile.md").write_text(text + "\n")
    (work / "memory_profile.json").write_text(json.dumps(runs, indent=1))
    print(text)
    print(f"\nraw numbers: {work / 'memory_profile.json'}")


if __name__ == "__main__":
    main()
