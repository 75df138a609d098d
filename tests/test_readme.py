"""README.md stays true: its Python blocks run as written (from the repository root, on the shipped models), and
every `matryoshka-llava ...` command it shows parses with the current command line."""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from matryoshka_llava.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def needs_vllm(block: str) -> bool:
    """The serving examples: run by tests/test_vllm_serving.py, in the environment that has vLLM and a server."""
    return re.search(r"^(from|import) (vllm|openai)\b", block, flags=re.MULTILINE) is not None


def shown_commands() -> list[str]:
    """Each `matryoshka-llava` command of the shell blocks (continuation lines joined) and of inline code."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if re.match(r"^(\S*/)?matryoshka-llava |.*-m matryoshka_llava\.cli ", line):
                commands.append(line)
    commands += re.findall(r"`((?:\.venv/bin/)?matryoshka-llava [^`]+)`", README)
    return commands


@pytest.mark.parametrize("index", range(len(code_blocks("python"))))
def test_python_blocks_run_as_written(index):
    block = code_blocks("python")[index]
    if needs_vllm(block):
        pytest.skip("a vLLM serving example: tests/test_vllm_serving.py runs it")
    result = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_the_quickstart_prints_an_answer_per_count():
    block = next(block for block in code_blocks("python") if "num_visual_tokens=k" in block)
    result = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=300)
    counts = re.search(r"for k in \(([\d, ]+)\)", block).group(1)
    printed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert printed == [count.strip() for count in counts.split(",")], result.stdout


def as_argv(command: str) -> list[str]:
    """The arguments of a shown command; a usage synopsis (`{m3,mqt}`, `[--dry-run]`) with its first choice and
    every optional part given."""
    command = re.sub(r"^.*?(matryoshka-llava|-m matryoshka_llava\.cli) ", "", command)
    command = re.sub(r"\{([^,}]+)(,[^}]*)?\}", r"\1", command).replace("[", " ").replace("]", " ")
    return shlex.split(command)


@pytest.mark.parametrize("command", shown_commands())
def test_shown_commands_parse(command):
    argv = as_argv(command)
    parser = build_parser(argv)
    try:
        args, extra = parser.parse_known_args(argv)
    except (SystemExit, argparse.ArgumentError) as error:
        pytest.fail(f"README command does not parse: {command} ({error})")
    assert not extra, f"README command has unknown flags {extra}: {command}"
