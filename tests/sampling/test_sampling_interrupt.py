"""``sample.py`` stopped while it generates (SIGTERM: a clean stop; SIGKILL: no chance to clean up), then the same
command again: the final rows equal an uninterrupted run's, with no prompt lost or repeated, and no half-written
shard is ever visible. The real processes take 25-30 s each (Python start-up on a loaded CPU), so they are slow tests;
the default suite sends SIGTERM to a ``sample()`` running in the test process, and checks the deferred write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sample import sample
from simpo.sampling.shards import write_json_atomic
from simpo.sampling.stop import GracefulStop, SamplingInterrupted
from tests.sampling.conftest import ROOT, compose_sample, read_jsonl

NUM_PROMPTS = 4  # one prompt per shard: a stop lands between shard files after about a second of generation


def overrides(policy: Path, reward: Path) -> list[str]:
    return ["model=hf", f"model.name_or_path={policy}", f"reward_model.name_or_path={reward}",
            f"prompts.limit={NUM_PROMPTS}", "shards.size=1", "generate.num_samples=3", "generate.max_new_tokens=5",
            "generate.top_p=1.0", "generate.batch_size=4", "binarize.test_size=1", "device=cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory, policy_dir, reward_dir) -> Path:
    """The uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("straight")
    sample(compose_sample(out, overrides(policy_dir, reward_dir)))
    return out


def command(out: Path, policy: Path, reward: Path) -> list[str]:
    return [sys.executable, str(ROOT / "sample.py"), *overrides(policy, reward), f"output_dir={out}",
            f"hydra.run.dir={out.parent / 'hydra'}"]  # fmt: skip


def stop_while_generating(out: Path, args: list[str], signum: signal.Signals) -> tuple[int, str]:
    """Start ``args``, wait until some but not all generate shards exist, send ``signum``; (exit status, log)."""
    log = out.parent / f"{signum.name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=out.parent,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        shards = out / "generate"
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            if shards.is_dir() and any(shards.glob("shard-*.json")):
                break
            time.sleep(0.05)
        done = len(list(shards.glob("shard-*.json"))) if shards.is_dir() else 0
        assert process.poll() is None and 0 < done < NUM_PROMPTS, (done, log.read_text()[-3000:])
        process.send_signal(signum)
        status = process.wait(timeout=120)
    return status, log.read_text()


def check_resumed(out: Path, straight: Path) -> None:
    """Same splits as the uninterrupted run; each prompt once in the shards and once in the splits."""
    for split in ("train_prefs", "test_prefs"):
        assert read_jsonl(out / f"{split}.jsonl") == read_jsonl(straight / f"{split}.jsonl"), split
    generated = [row["prompt_id"] for p in sorted((out / "generate").glob("shard-*.json"))
                 for row in json.loads(p.read_text())["rows"]]  # fmt: skip
    expected = [row["prompt_id"] for p in sorted((straight / "generate").glob("shard-*.json"))
                for row in json.loads(p.read_text())["rows"]]  # fmt: skip
    assert generated == expected and len(set(expected)) == NUM_PROMPTS
    kept = [row["prompt_id"] for split in ("train_prefs", "test_prefs") for row in read_jsonl(out / f"{split}.jsonl")]
    assert len(kept) == len(set(kept))
    assert not [p for p in out.rglob(".*") if "tmp" in p.name]  # no temporary file left


def assert_whole_shards(out: Path) -> int:
    """Every shard file on disk parses and holds its one prompt with 3 responses; returns how many there are."""
    files = sorted((out / "generate").glob("shard-*.json"))
    for path in files:
        rows = json.loads(path.read_text())["rows"]
        assert len(rows) == 1 and len(rows[0]["responses"]) == 3, path
    return len(files)


def signal_when_a_shard_exists(out: Path, signum: signal.Signals) -> threading.Thread:
    """A thread that sends ``signum`` to this process as soon as the first generate shard file exists."""

    def watch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "generate" / "shard-00000.json").exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_sigterm_to_sample_drops_the_shard_in_flight_and_a_rerun_completes(straight, policy_dir, reward_dir, tmp_path):
    out = tmp_path / "out"
    cfg = compose_sample(out, overrides(policy_dir, reward_dir))
    before = signal.getsignal(signal.SIGTERM)  # another test's (e.g. Lightning's) handler may be installed
    watcher = signal_when_a_shard_exists(out, signal.SIGTERM)
    with pytest.raises(SamplingInterrupted) as stop:
        sample(cfg)
    watcher.join()
    assert stop.value.code == 143 and stop.value.signal == signal.SIGTERM
    assert 0 < assert_whole_shards(out) < NUM_PROMPTS and not list(out.rglob(".*tmp*"))
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    sample(cfg)
    check_resumed(out, straight)


def test_a_signal_during_an_atomic_write_waits_for_the_rename(tmp_path):
    path = tmp_path / "shard.json"
    with GracefulStop(), pytest.raises(SamplingInterrupted) as stop:
        big = {"rows": ["x" * 1000] * 1000}
        original = json.dump

        def dump_then_signal(*args, **kwargs):  # the signal lands between writing the temporary and the rename
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)

        json.dump = dump_then_signal
        try:
            write_json_atomic(path, big)
        finally:
            json.dump = original
    assert stop.value.code == 130
    assert json.loads(path.read_text()) == big and list(tmp_path.iterdir()) == [path]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_same_command_resumes(straight, policy_dir, reward_dir, tmp_path):
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)  # another test's (e.g. Lightning's) handler may be installed
    status, log = stop_while_generating(out, command(out, policy_dir, reward_dir), signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, log[-3000:]
    assert "SIGTERM (exit status 143): stopped; generate " in log and "dropped whole" in log
    assert f"resume with: python sample.py model=hf model.name_or_path={policy_dir}" in log
    assert f"output_dir={out}" in log.split("resume with:")[1]
    assert "Traceback" not in log
    assert 0 < assert_whole_shards(out) < NUM_PROMPTS
    assert not list(out.rglob(".*tmp*")) and not (out / "train_prefs.jsonl").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # this process's handlers untouched

    sample(compose_sample(out, overrides(policy_dir, reward_dir)))  # the same command, in this process
    check_resumed(out, straight)
    assert signal.getsignal(signal.SIGTERM) is before  # sample() restored the handlers it set


@pytest.mark.slow
def test_sigkill_mid_generation_then_the_same_command_resumes(straight, policy_dir, reward_dir, tmp_path):
    out = tmp_path / "out"
    args = command(out, policy_dir, reward_dir)
    status, _ = stop_while_generating(out, args, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert 0 < assert_whole_shards(out) < NUM_PROMPTS  # a killed write leaves at most a temporary, never a shard
    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_resumed(out, straight)
