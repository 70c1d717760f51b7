"""The README and docs/*.md say what runs: their commands, flags, files and links must exist.

Every fenced command block (```bash, ```sh, ```console or no language) is read as shell lines:
each ``python -m X`` names an importable module, each script or config path names a file in the
repository, and each ``--flag`` given to a Python command (``python -m X``, a console script of
pyproject.toml such as ``sugfw``, ``python path.py``) appears in that command's ``--help``, run
once per command. Flags are never listed here, so renaming one in the code and not in the docs
fails. Relative links (files, images, heading anchors) must resolve.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

README_MAX_BYTES = 10 * 1024
FIRST_COMMANDS = ["bash scripts/run.sh", "bash scripts/test.sh"]
COMMAND_LANGUAGES = {"", "bash", "sh", "console"}
FILE_SUFFIXES = (".py", ".sh", ".xml", ".yml", ".toml", ".txt")
PYTHONS = {"python", "python3", ".venv/bin/python"}
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}
HELP_TIMEOUT_S = 120

# docs/settings.md is generated on another branch (issue 22, helper S). Until it is merged the
# links to it cannot resolve; this allowance ends by itself once the file exists.
PENDING_PAGE = ROOT / "docs" / "settings.md"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced block, in order."""
    blocks: list[tuple[str, list[str]]] = []
    language: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*([\w+-]*)\s*$", line)
        if fence and language is None:
            language, body = fence.group(1).lower(), []
        elif fence:
            blocks.append((language, body))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def _shell_commands(lines: list[str]) -> list[list[str]]:
    """Word lists of each command in a block: continuations joined, comments, prompts and
    optional-argument brackets dropped, split at shell operators."""
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    commands: list[list[str]] = []
    for line in joined:
        line = re.sub(r"^\s*\$\s+", "", line)  # console prompt
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in lexer:
            if token in SHELL_OPERATORS:
                commands.append(words)
                words = []
            elif token.strip("[]"):
                words.append(token.strip("[]"))
        commands.append(words)
    return [words for words in commands if words]


def _command_words() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for language, lines in _fenced_blocks(page.read_text(encoding="utf-8")):
            if language in COMMAND_LANGUAGES:
                found += [(_rel(page), words) for words in _shell_commands(lines)]
    return found


@functools.cache
def _console_scripts() -> dict[str, str]:
    # The [project.scripts] table, read without tomllib (Python 3.11+; the project runs on 3.10).
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    table = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, flags=re.S | re.M)
    lines = table.group(1) if table else ""
    return dict(re.findall(r'^([\w.-]+)\s*=\s*"([^"]+)"', lines, flags=re.M))


def _python_command(words: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """The argv of a Python command (its --help is asked), and the words after it."""
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return None
    head, rest = words[0], words[1:]
    if head in PYTHONS and rest[:1] == ["-m"] and len(rest) > 1:
        module, rest = rest[1], rest[2:]
        argv = [sys.executable, "-m", module]
    elif head in PYTHONS and rest and rest[0].endswith(".py"):
        argv, rest = [sys.executable, str(ROOT / rest[0])], rest[1:]
    elif head in _console_scripts():
        module, _, function = _console_scripts()[head].partition(":")
        call = f"import sys; sys.argv[0] = {head!r}; from {module} import {function}; "
        argv = [sys.executable, "-c", call + f"sys.exit({function}())"]
    else:
        return None
    # A plain word right after the command is taken as its subcommand (``sugfw score``), whose
    # flags are its own. Where the command has none, ``X word --help`` prints X's help all the
    # same; where it has, an unknown subcommand makes --help fail, as it should.
    if rest and re.fullmatch(r"[a-z][a-z_-]*", rest[0]):
        argv, rest = [*argv, rest[0]], rest[1:]
    return tuple(argv), rest


@functools.cache
def _help_text(argv: tuple[str, ...]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [*argv, "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{' '.join(argv[1:])} --help failed:\n{done.stderr[-2000:]}"
    return done.stdout


def _mentions(help_text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", help_text) is not None


def _flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.fullmatch(r"--[a-z][\w-]*(=.*)?", w)]


def _module_exists(name: str) -> bool:
    """find_spec without importing anything: packages are searched on disk, never executed."""
    parts = name.split(".")
    spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
    for depth in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(
            ".".join(parts[: depth + 1]), list(spec.submodule_search_locations)
        )
    return spec is not None


def test_readme_is_a_short_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    after_title = [line for line in text.splitlines()[1:] if line.strip()]
    assert after_title[0].startswith("```"), "the first thing after the title is a command block"
    language, lines = _fenced_blocks(text)[0]
    assert language in COMMAND_LANGUAGES
    assert [line.strip() for line in lines if line.strip()] == FIRST_COMMANDS


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target for _, target in _links(README)}
    missing = [_rel(page) for page in DOCS if _rel(page) not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_python_modules_exist() -> None:
    modules = set()
    for _, words in _command_words():
        for i, word in enumerate(words[:-1]):
            if word == "-m" and i > 0 and words[i - 1] in PYTHONS:
                modules.add(words[i + 1])
    assert modules, "no `python -m` command found: the block parser is broken"
    missing = sorted(m for m in modules if not _module_exists(m))
    assert not missing, f"modules named in the docs do not exist: {missing}"


def test_named_files_exist() -> None:
    missing = []
    for page, words in _command_words():
        for i, word in enumerate(words):
            path = word.split("=", 1)[-1]  # --config=path names a file too
            run_by_shell = i > 0 and words[i - 1] in {"bash", "sh"}
            if run_by_shell or path.startswith("./") or path.endswith(FILE_SUFFIXES):
                if not (ROOT / path).is_file():
                    missing.append(f"{page}: {path}")
    assert not missing, "files named in command blocks do not exist:\n" + "\n".join(missing)


def test_flags_are_accepted() -> None:
    wanted: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    names: dict[tuple[str, ...], str] = {}
    for page, words in _command_words():
        if found := _python_command(words):
            argv, rest = found
            names[argv] = " ".join(words[: len(words) - len(rest)])
            wanted.setdefault(argv, set()).update((page, flag) for flag in _flags(rest))
    assert wanted, "no Python command found: the block parser is broken"
    # Each --help imports torch (seconds): run them side by side, once per command.
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(wanted, pool.map(_help_text, wanted), strict=True))
    unknown = [
        f"{page}: {names[argv]} {flag}"
        for argv, uses in wanted.items()
        for page, flag in sorted(uses)
        if not _mentions(helps[argv], flag)
    ]
    assert not unknown, "flags not in the command's --help:\n" + "\n".join(unknown)


def _links(page: Path) -> list[tuple[str, str]]:
    """(raw target, repository-relative path) of each relative link or image outside code."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    links = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        links.append((target, _rel(path) if path.is_relative_to(ROOT) else str(path)))
    return links


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1 for repeats."""
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target, path in _links(page):
        resolved = ROOT / path
        if resolved == PENDING_PAGE and not PENDING_PAGE.exists():
            continue  # generated on another branch; see PENDING_PAGE
        if not resolved.exists():
            broken.append(target)
        elif "#" in target and resolved.suffix == ".md":
            if target.split("#", 1)[1] not in _anchors(resolved):
                broken.append(target)
    own = _anchors(page)
    text = re.sub(r"`[^`\n]*`", "", page.read_text(encoding="utf-8"))
    broken += [f"#{a}" for a in re.findall(r"\]\(#([^)\s]+)\)", text) if a not in own]
    assert not broken, f"{_rel(page)}: links that do not resolve: {broken}"
