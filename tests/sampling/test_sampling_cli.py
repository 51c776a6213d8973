"""``python sample.py --help``: the composed config and a line of documentation for every key of it."""

from __future__ import annotations

import subprocess
import sys

from omegaconf import OmegaConf

from tests.sampling.conftest import ROOT, compose_sample

MARKER = "Keys (all in the config below):"
# conf/model/ keys that only training reads; model.architecture (the random-init shape) counts as one key
NOT_SAMPLING = ("model.compile", "model.chunk_size", "model.head_backward", "model.gradient_checkpointing")


def keys(node: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves (a list counts as a leaf)."""
    out = []
    for name, value in node.items():
        if f"{prefix}{name}" in NOT_SAMPLING:
            continue
        if isinstance(value, dict) and name != "architecture":
            out += keys(value, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_help_shows_the_config_and_documents_every_key(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--help"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("On-policy preference data: python sample.py")
    assert "reward_model:\n  name_or_path: null" in out.stdout  # the composed config
    documented = out.stdout.split(MARKER, 1)[1]
    config = OmegaConf.to_container(compose_sample(tmp_path), resolve=False)
    expected = keys(config)
    assert len(expected) >= 25 and "generate.seeds" in expected and "model.name_or_path" in expected
    missing = [key for key in expected if key not in documented]
    assert not missing, f"keys of conf/sample.yaml missing from conf/hydra/help/sample.yaml: {missing}"
    assert "SIGTERM" in documented and "loss:" not in out.stdout  # no training groups listed
