"""data.layout=auto: the layout measured fastest where the run trains, a resumed run's own layout, and the choice
written down (config.yaml, data_report.json)."""

from __future__ import annotations

import json

import yaml

from data.collate import LAYOUTS, choose_layout
from tests.conftest import TINY_OVERRIDES, compose_train
from train import run_and_record

SHORT = [*TINY_OVERRIDES, "trainer.max_steps=2", "trainer.val_check_interval=2",
         "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip


def test_auto_picks_by_device_kernel_and_resume():
    assert choose_layout("auto", "cpu", "auto")[0] == "shared_prompt_packed"
    assert choose_layout("auto", "cuda", "auto")[0] == "padded"
    assert choose_layout("auto", "cpu", "flash_attention_2")[0] == "padded"
    assert choose_layout("auto", "cpu", "auto", resumed="packed") == (
        "packed", "data.layout=auto: the resumed checkpoint's layout"
    )
    for layout in LAYOUTS:  # an explicit layout is kept, whatever the device
        assert choose_layout(layout, "cuda", "auto") == (layout, "data.layout")


def test_the_default_layout_on_cpu_is_recorded_and_a_resume_keeps_the_runs_own(tmp_path):
    fresh = tmp_path / "fresh"
    run_and_record(compose_train(fresh, SHORT))
    assert yaml.safe_load((fresh / "config.yaml").read_text())["data"]["layout"] == "shared_prompt_packed"
    settings = json.loads((fresh / "data_report.json").read_text())["settings"]
    assert settings["batch_layout"] == "shared_prompt_packed" and settings["batch_layout_chosen_by"].startswith(
        "data.layout=auto: on CPU"
    )
    padded = tmp_path / "padded"  # a run that trained padded (an older run, or one that asked for it) ...
    run_and_record(compose_train(padded, [*SHORT, "data.layout=padded"]))
    run_and_record(compose_train(padded, [*SHORT, "ckpt_path=last", "trainer.max_steps=3"]))  # ... resumed with auto
    status = json.loads((padded / "status.json").read_text())
    assert status["status"] == "completed" and "data.layout" not in status["changed"]
    settings = json.loads((padded / "data_report.json").read_text())["settings"]
    assert settings["batch_layout"] == "padded" and "resumed checkpoint" in settings["batch_layout_chosen_by"]
