"""Every command in README.md, data/README.md and docs/*.md stays valid: each ``mlm-pretrain`` command
(also through ``python -m``, ``accelerate launch`` and ``torchrun``) parses, and its recipe and
key=value overrides load (a renamed key, recipe or flag fails here); each ``python scripts/X.py``
command's arguments parse with the script's own ``parse_args``; each ``bash scripts/...`` file exists.
The commands that run whole stages are run for real by the tests named in their docs (quickstart:
tests/test_recipes.py; scripts: tests/test_scripts.py)."""
from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from mlm_pretrain.cli import STAGES, build_parser
from mlm_pretrain.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FOREIGN = ("python -m pytest", "python -c", "mkdir ", "export ", "hf ", "pip ", "cd ", "git ", "cat ", "ls ", "du ", "nvidia-smi")


def _commands(path: Path) -> list[list[str]]:
    """The shell commands of a document's ```bash blocks as word lists: continuations joined, comments,
    ``/usr/bin/time`` and environment-variable prefixes dropped, ``a && b`` and ``a; b`` split."""
    found = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&")
            lex.whitespace_split = True
            words: list[str] = []
            for token in [*lex, ";"]:
                if token not in (";", "&&", "&"):
                    words.append(token)
                    continue
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # OMP_NUM_THREADS=1 cmd
                    words.pop(0)
                if words[:1] == ["/usr/bin/time"]:  # /usr/bin/time -v cmd
                    words.pop(0)
                    while words and words[0].startswith("-"):
                        words.pop(0)
                if words:
                    found.append(words)
                words = []
    return found


def _all_commands() -> list[tuple[str, str]]:
    return [(p.relative_to(ROOT).as_posix(), shlex.join(c)) for p in DOCS for c in _commands(p)
            if not shlex.join(c).startswith(FOREIGN)]


def _placeholders(word: str) -> str:
    """``<pretrained|random>`` -> ``pretrained``; ``<arch>`` -> ``arch``."""
    return re.sub(r"<([^<>|]+)(?:\|[^<>]*)?>", r"\1", word)


def _mlm_argv(words: list[str]) -> list[str] | None:
    if words[0] == "mlm-pretrain":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1] == "mlm_pretrain":
        return words[words.index("-m") + 2:]
    return None


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"doc_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


COMMANDS = _all_commands()


def test_the_docs_have_commands_of_every_kind():
    kinds = {c.split()[0] for _, c in COMMANDS}
    assert {"mlm-pretrain", "python", "bash", "accelerate"} <= kinds, kinds
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_command_is_valid(doc, command):
    words = [_placeholders(w) for w in shlex.split(command)]
    if words[:3] == ["mlm-pretrain", "tokenizer", "--config"] and words[3] == "my_recipe.yaml":
        words[3] = "tiny"  # the README's example of a user's own recipe file
    argv = _mlm_argv(words)
    if argv is not None:
        args = build_parser().parse_args(argv)
        if args.command in STAGES or args.command == "config":
            load_config(args.config, args.overrides)  # unknown keys, bad values, missing recipes raise
        return
    if words[0] == "bash":
        assert (ROOT / words[1]).is_file(), f"{doc}: {command}: no {words[1]}"
        return
    if words[0] == "python" and words[1].startswith("scripts/"):
        name = Path(words[1]).stem
        module = _script(name)
        module.parse_args([w for w in words[2:]])  # argparse exits (SystemExit) on an unknown flag or value
        return
    pytest.fail(f"{doc}: a command this test does not know how to check: {command!r}")
