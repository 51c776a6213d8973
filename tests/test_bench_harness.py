"""The whole-process benchmark's pieces: the varied-length pair synthesis, the /usr/bin/time parser, the commands
and the table (fast); one end-to-end smoke run of both sides is marked slow."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from benchmarks import varied_pairs
from benchmarks.whole_process_vs_trl import (
    PHASES,
    PRESETS,
    main,
    ours_command,
    parse_time_v,
    phase_seconds,
    phase_table,
    table,
    trl_command,
)
from data.tokenizers import load_tokenizer

GNU_TIME_OUTPUT = """\tCommand being timed: "python train.py model.name_or_path=/tmp/m"
\tUser time (seconds): 41.27
\tSystem time (seconds): 3.05
\tPercent of CPU this job got: 171%
\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}
\tAverage shared text size (kbytes): 0
\tMaximum resident set size (kbytes): 2309876
\tMajor (requiring I/O) page faults: 12
\tExit status: 0
"""


@pytest.fixture(scope="module")
def mistral_tokenizer():
    return load_tokenizer("mistral-v1")


def test_parse_time_v_reads_wall_rss_and_cpu_times():
    parsed = parse_time_v(GNU_TIME_OUTPUT.format(wall="1:25.93"))
    assert parsed["wall_s"] == pytest.approx(85.93)
    assert parsed["max_rss_mib"] == pytest.approx(2309876 / 1024)
    assert parsed["user_s"] == pytest.approx(41.27)
    assert parsed["sys_s"] == pytest.approx(3.05)
    assert parsed["exit_status"] == 0
    assert parse_time_v(GNU_TIME_OUTPUT.format(wall="1:02:03"))["wall_s"] == pytest.approx(3723.0)
    assert parse_time_v(GNU_TIME_OUTPUT.format(wall="0:07.50"))["wall_s"] == pytest.approx(7.5)


def test_parse_time_v_refuses_other_text():
    with pytest.raises(ValueError, match="Elapsed"):
        parse_time_v("real 0m1.0s\nuser 0m0.5s\n")


def test_varied_pairs_are_deterministic_and_in_the_ultrafeedback_layout(mistral_tokenizer):
    rows = varied_pairs.synthesise(6, mistral_tokenizer, seed=3)
    assert rows == varied_pairs.synthesise(6, mistral_tokenizer, seed=3)
    assert rows != varied_pairs.synthesise(6, mistral_tokenizer, seed=4)
    for row in rows:
        assert set(row) == {"prompt", "prompt_id", "chosen", "rejected"}
        assert row["chosen"][0] == row["rejected"][0] == {"role": "user", "content": row["prompt"]}
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["user", "assistant"]
        assert row["chosen"][1]["content"] != row["rejected"][1]["content"]


def test_varied_pair_lengths_follow_the_targets(mistral_tokenizer):
    rows = varied_pairs.synthesise(150, mistral_tokenizer, seed=0)
    lengths = varied_pairs.measure(rows, mistral_tokenizer)
    prompt = varied_pairs.summary(lengths["prompt"])
    responses = varied_pairs.summary(lengths["chosen"] + lengths["rejected"])
    assert 50 <= prompt["mean"] <= 80
    assert 110 <= responses["mean"] <= 155
    assert responses["p90"] > 1.6 * responses["p50"]  # a long tail
    assert max(prompt["max"], responses["max"]) <= 384  # clipped at ~380 (re-tokenising moves a count by 1-2)
    assert min(lengths["prompt"]) >= varied_pairs.MIN_PROMPT_TOKENS - 2
    assert lengths["chosen"] != lengths["rejected"]  # drawn independently


def test_write_dataset_is_a_usable_data_dir(tmp_path, mistral_tokenizer):
    varied_pairs.write_dataset(tmp_path, 5, 2, mistral_tokenizer, seed=1)
    train = [json.loads(line) for line in (tmp_path / "train_prefs.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "test_prefs.jsonl").read_text().splitlines()]
    assert len(train) == 5 and len(test) == 2
    assert not {row["prompt"] for row in train} & {row["prompt"] for row in test}


def _args(**overrides):
    values = {"steps": 7, "batch_size": 4, "lr": 1e-4, "beta": 2.0, "gamma_beta_ratio": 0.5, "seed": 42,
              "ours_override": ["data.pack_length=2048"], "trl_gradient_checkpointing": False}  # fmt: skip
    return argparse.Namespace(**{**values, **overrides})


def test_commands_hold_the_matched_settings(tmp_path):
    preset = PRESETS["mistral"]
    paths = (tmp_path / "model", tmp_path / "data", tmp_path / "out", tmp_path / "probe.json")
    ours = ours_command(_args(), preset, *paths, layout="packed")
    for item in ("data.test_split=null", "data.batch_size=4", "trainer.max_steps=7", "validate_before_training=false",
                 "trainer.enable_progress_bar=false", "optimizer.lr=0.0001", "loss.beta=2.0", "data.max_length=1024",
                 "data.max_prompt_length=512", "data.layout=packed", "data.pack_length=2048",
                 f"model.name_or_path={paths[0]}", f"+callbacks.probe.path={paths[3]}"):  # fmt: skip
        assert item in ours
    assert not any(item.startswith("data.layout") for item in ours_command(_args(), preset, *paths, layout=None))
    trl = trl_command(_args(), preset, *paths)
    assert trl[trl.index("--steps") + 1] == "7" and trl[trl.index("--max-length") + 1] == "1024"
    assert "--gradient-checkpointing" not in trl
    assert "--gradient-checkpointing" in trl_command(_args(trl_gradient_checkpointing=True), preset, *paths)


def test_table_ratios():
    base = {"wall_s": 100.0, "peak_rss_mib": 1000.0, "floor_rss_mib": 500.0, "startup_s": 5.0, "train_s": 90.0,
            "end_s": 5.0, "written_mib": 10.0, "tokens": 9000, "tokens_per_sec": 100.0}  # fmt: skip
    rows = [{"name": "trl", **base}, {"name": "ours padded", **base, "wall_s": 60.0, "peak_rss_mib": 400.0},
            {"name": "ours packed", **base, "wall_s": 50.0, "tokens_per_sec": 150.0}]  # fmt: skip
    lines = table(rows).splitlines()
    assert "| 0.60x | 0.40x | 1.00x | 1.00x |" in lines[3]
    assert lines[4].endswith("| 0.50x | 1.00x | 1.00x | 1.50x |")
    assert lines[2].endswith("| 1.00x | 1.00x | 1.00x | - |")


def test_phases_of_either_side_add_up_to_the_wall_time():
    probe = {"t_train_start": 110.0, "t_first_step_end": 112.0, "t_last_step_end": 120.0}
    calls = {
        "load_tokenizer": [[104.5, 105.0]],
        "prepare_data": [[105.0, 106.0], [110.0, 110.0]],  # fit calls prepare_data and load again (cached)
        "load": [[106.0, 106.5], [110.0, 110.0]],
        "build_module": [[106.5, 108.0]],
        "save_checkpoint": [[120.5, 121.0], [121.0, 121.2]],
        "export": [[121.5, 122.0]],
    }
    ours = {"imported": 104.0, "calls": calls}
    seconds = phase_seconds(probe, ours, launched=100.0, wall_s=23.0)
    assert seconds == pytest.approx({"imports": 4.0, "checks": 0.5, "tokenizer_model": 2.0, "data": 1.5,
                                     "trainer": 2.0, "first_step": 2.0, "other_steps": 8.0, "checkpoint": 0.7,
                                     "export": 0.5, "rest": 1.8})  # fmt: skip
    trl = {**probe, "imported": 103.0, "model_loaded": 104.0, "data_loaded": 104.5, "checkpoint_saved": 121.0,
           "export_start": 121.0, "export_end": 121.5}  # fmt: skip
    seconds = phase_seconds(trl, None, launched=100.0, wall_s=22.0)
    assert seconds["checks"] == 0.0 and seconds["trainer"] == pytest.approx(5.5)
    assert sum(seconds.values()) == pytest.approx(22.0) and set(seconds) == {key for key, _ in PHASES}
    rows = [
        {"name": "trl", "wall_s": 22.0, **{f"phase_{k}": v for k, v in seconds.items()}},
        {"name": "ours default", "wall_s": 20.0, **{f"phase_{k}": v - 0.1 for k, v in seconds.items()}},
    ]
    lines = phase_table(rows).splitlines()
    assert len(lines) == 2 + len(PHASES) + 1 and lines[-1].endswith("| 22.0 | 20.0 (-2.0) |")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="pip install -r requirements-bench.txt")
@pytest.mark.skipif(shutil.which("time") is None and not Path("/usr/bin/time").exists(), reason="no GNU time")
def test_smoke_both_sides_end_to_end(tmp_path, capsys):
    main(["--preset", "mistral", "--tiny", "--steps", "2", "--work-dir", str(tmp_path), "--phases"])
    results = json.loads((tmp_path / "results.json").read_text())
    names = [row["name"] for row in results["medians"]]
    assert names == ["trl", "ours padded"]
    tokens = {row["tokens"] for row in results["medians"]}
    assert len(tokens) == 1  # both sides trained the same sequences
    assert all(row["floor_rss_mib"] < row["peak_rss_mib"] for row in results["medians"])
    for row in results["medians"]:  # ours ran under benchmarks/phase_timer.py: every phase timed, none negative
        phases = [row[f"phase_{key}"] for key, _ in PHASES]
        assert sum(phases) == pytest.approx(row["wall_s"]) and min(phases) >= 0.0, row
    out = capsys.readouterr().out
    assert "| trl |" in out and "| first step |" in out
