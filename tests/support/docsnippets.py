"""The docs' code blocks as tests: find them, read what each promises, check what arrived.

The convention (documented for writers in docs/development.md, "Code blocks are tests"):

* A ```python block is a script, run as ``python snippet.py`` in a fresh interpreter. A ```pycon
  block is an interactive session, run with ``python -m doctest`` in a fresh interpreter: its
  shown output is checked.
* Right after the block, an HTML comment (invisible on the site and on GitHub) says what the block
  promises::

      <!-- snippet
      expect: service_name=checkout type=LOGIN level=INFO actor_id=user_42
      expect: type=DATA_CORRUPTION level=CRITICAL metadata.table=payments
      -->

  Each ``expect:`` line is one event that must be stored in the fake Loki; together they are
  every event that must arrive (one stored event per line, ``count=N`` for N alike, nothing
  else). ``expect: nothing`` promises that no event is sent. Keys are the labels
  (``service_name``, ``env``, ``level``, ``actor``, ``type``), the structured metadata
  (``actor_id``, ``trace_id``, ``span_id``, ``logger``, ``original_time``) and the line
  (``message``, ``exception``, ``metadata.a.b``); ``key=value`` is equal (non-text metadata
  values as JSON: ``=200``, ``=false``), ``key~=regex`` matches in full, ``key=*`` is present.
* A fragment by nature (a settings.py, an app module) names a harness on the first line:
  ``<!-- snippet: harness=django_orders file=settings.py -->``. Its file is written into a project
  directory and ``tests/support/docs_harness/<harness>.py`` runs there in a fresh interpreter, doing
  what a deployment does with it (Django's settings loaded and a request served, an ASGI app
  served). ``project=NAME`` puts several blocks of one page into the same directory.
* Readers see Loki at ``http://loki:3100``; the test writes the fake's URL in its place and sets
  ``LOKI_URL`` to it. Each run gets its own fake, home and cache directory (so its own spool).
* ``shipper ...`` lines in ```bash/```sh/```console/```text blocks are parsed by the real argument
  parser; those that need no server (``--help``, ``retention render``, ``retention explain``,
  ``spool status``) are also run, and in ```console/```text blocks (``$ shipper ...``) their
  output must be the output shown.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HARNESS_DIR = Path(__file__).resolve().parent / "docs_harness"
DOCS_URL = "http://loki:3100"

PYTHON_LANGS = {"python", "py", "python3"}
SESSION_LANGS = {"pycon"}
SHELL_LANGS = {"bash", "sh", "shell", "console", "text"}
LABEL_KEYS = {"service_name", "env", "level", "actor", "type"}
METADATA_KEYS = {"actor_id", "trace_id", "span_id", "logger", "original_time"}
LINE_KEYS = {"message", "exception"}
OPTION_KEYS = {"harness", "file", "project"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_TITLE = re.compile(r'title="([^"]+)"')


class SnippetError(ValueError):
    """A block breaks the convention; the message names the file and the line."""


@dataclass(frozen=True)
class Matcher:
    key: str
    op: str  # "=", "~=" or "*"
    value: str

    def matches(self, event: dict[str, Any]) -> bool:
        found, actual = _lookup(event, self.key)
        if self.op == "*":
            return found and actual not in (None, "")
        if not found:
            return False
        text = actual if isinstance(actual, str) else json.dumps(actual, sort_keys=True)
        if self.op == "~=":
            return re.fullmatch(self.value, text, re.DOTALL) is not None
        return text == self.value

    def __str__(self) -> str:
        return f"{self.key}=*" if self.op == "*" else f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True)
class Expect:
    matchers: tuple[Matcher, ...]
    count: int = 1

    def __str__(self) -> str:
        text = " ".join(str(m) for m in self.matchers)
        return f"{text} count={self.count}" if self.count != 1 else text


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    code: str
    title: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    expects: list[Expect] = field(default_factory=list)
    nothing: bool = False
    has_directive: bool = False

    @property
    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


@dataclass
class Project:
    """Fragments run together by one harness."""

    name: str
    harness: str
    blocks: list[Block]

    @property
    def where(self) -> str:
        return ", ".join(b.where for b in self.blocks)

    @property
    def files(self) -> dict[str, str]:
        return {b.options["file"]: b.code for b in self.blocks}

    @property
    def expects(self) -> list[Expect]:
        return [e for b in self.blocks for e in b.expects]

    @property
    def nothing(self) -> bool:
        return any(b.nothing for b in self.blocks)


@dataclass(frozen=True)
class Command:
    """A ``shipper ...`` command line found in a shell or console block."""

    where: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    output: str | None  # the output shown after it (console/text blocks), if any

    @property
    def runs_without_server(self) -> bool:
        args = self.argv[1:]
        if any(a in ("--help", "-h", "--version") for a in args):
            return True
        return tuple(args[:2]) in {("retention", "render"), ("retention", "explain"),
                                   ("spool", "status")}


# ----------------------------------------------------------------------------- finding blocks


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with the snippet directive after it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        start = i
        body: list[str] = []
        i += 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        while i < len(lines) and not closing.match(lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        lang = info.split()[0].lstrip("{.").rstrip("}").lower() if info else ""
        title = _TITLE.search(info)
        block = Block(path, start + 1, lang, "\n".join(body) + "\n",
                      title=title.group(1) if title else None)
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].strip().startswith("<!-- snippet"):
            comment: list[str] = []
            while j < len(lines):
                comment.append(lines[j].strip())
                if "-->" in lines[j]:
                    break
                j += 1
            _read_directive(block, "\n".join(comment))
            i = j + 1
        out.append(block)
    return out


def _read_directive(block: Block, comment: str) -> None:
    body = comment.removeprefix("<!--").rsplit("-->", 1)[0].strip()
    first, *rest = body.splitlines() or [""]
    head = first.removeprefix("snippet").strip()
    if head.startswith(":"):
        head = head[1:].strip()
    block.has_directive = True
    if head.startswith("expect:"):  # a one-line form: <!-- snippet: expect: ... -->
        rest.insert(0, head)
        head = ""
    for token in shlex.split(head):
        key, sep, value = token.partition("=")
        if not sep or key not in OPTION_KEYS:
            raise SnippetError(f"{block.where}: unknown snippet option {token!r} "
                               f"(known: {', '.join(sorted(OPTION_KEYS))}=...)")
        block.options[key] = value
    if "harness" in block.options and "file" not in block.options:
        if block.title is None:
            raise SnippetError(f"{block.where}: a harness fragment needs file=NAME "
                               '(or a title="NAME" on its fence)')
        block.options["file"] = block.title
    for raw in rest:
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("expect:"):
            raise SnippetError(f"{block.where}: expected 'expect: ...' lines, got {line!r}")
        spec = line.removeprefix("expect:").strip()
        if spec == "nothing":
            block.nothing = True
            continue
        block.expects.append(parse_expect(spec, block.where))
    if block.nothing and block.expects:
        raise SnippetError(f"{block.where}: 'expect: nothing' and events at once")


def parse_expect(spec: str, where: str = "") -> Expect:
    matchers: list[Matcher] = []
    count = 1
    for token in shlex.split(spec):
        if token.startswith("count="):
            count = int(token.removeprefix("count="))
            continue
        if "~=" in token:
            key, value = token.split("~=", 1)
            op = "~="
        elif "=" in token:
            key, value = token.split("=", 1)
            op = "*" if value == "*" else "="
        else:
            raise SnippetError(f"{where}: expected key=value, key~=regex or key=*, got {token!r}")
        if not (key in LABEL_KEYS or key in METADATA_KEYS or key in LINE_KEYS
                or key.startswith("metadata.")):
            raise SnippetError(
                f"{where}: unknown event key {key!r}: use a label "
                f"({', '.join(sorted(LABEL_KEYS))}), structured metadata "
                f"({', '.join(sorted(METADATA_KEYS))}), message, exception or metadata.<key>"
            )
        matchers.append(Matcher(key, op, value))
    if not matchers:
        raise SnippetError(f"{where}: an expect line names no field")
    return Expect(tuple(matchers), count)


def all_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks(path)]


def scripts_and_projects(found: Iterable[Block]) -> tuple[list[Block], list[Project]]:
    """Python/pycon blocks to run alone, and harness projects (per page, by project name)."""
    singles: list[Block] = []
    projects: dict[tuple[Path, str], Project] = {}
    for block in found:
        if block.lang not in PYTHON_LANGS | SESSION_LANGS and "harness" not in block.options:
            continue
        if block.lang in PYTHON_LANGS and not block.has_directive:
            raise SnippetError(
                f"{block.where}: a python block needs a '<!-- snippet ... -->' comment right "
                "after it saying what it promises (see docs/development.md)"
            )
        if "harness" not in block.options:
            if block.lang in PYTHON_LANGS and not (block.expects or block.nothing):
                raise SnippetError(f"{block.where}: the snippet comment has no 'expect:' line")
            singles.append(block)
            continue
        name = block.options.get("project") or f"{block.options['harness']}@{block.line}"
        project = projects.setdefault((block.path, name),
                                      Project(name, block.options["harness"], []))
        if project.harness != block.options["harness"]:
            raise SnippetError(f"{block.where}: project {name} has two harnesses")
        if block.options["file"] in project.files:
            raise SnippetError(f"{block.where}: project {name} has {block.options['file']} twice")
        project.blocks.append(block)
    for project in projects.values():
        if not (HARNESS_DIR / f"{project.harness}.py").is_file():
            raise SnippetError(f"{project.where}: no harness tests/support/docs_harness/"
                               f"{project.harness}.py")
        if not (project.expects or project.nothing):
            raise SnippetError(f"{project.where}: project {project.name} has no 'expect:' line")
    return singles, list(projects.values())


def shipper_commands(found: Iterable[Block]) -> list[Command]:
    """``shipper ...`` lines of shell and console blocks, with the output shown after them."""
    out: list[Command] = []
    for block in found:
        if block.lang not in SHELL_LANGS:
            continue
        prompt_only = block.lang in ("console", "text")
        lines = _join_continuations(block.code.splitlines())
        for n, line in enumerate(lines):
            text = line.strip()
            has_prompt = text.startswith("$ ")
            if prompt_only and not has_prompt:
                continue
            text = text.removeprefix("$ ")
            try:
                lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                lexer.commenters = "#"
                words = list(lexer)
            except ValueError:
                continue
            # the command ends at the first shell operator: a pipe, a redirect, && or ;
            ends = [i for i, word in enumerate(words) if word and set(word) <= set("|&;<>()")]
            if ends:
                words = words[:ends[0]]
            env: list[tuple[str, str]] = []
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                key, _, value = words.pop(0).partition("=")
                env.append((key, value))
            if not words or words[0] != "shipper":
                continue
            output = None
            if has_prompt:
                shown = []
                for following in lines[n + 1:]:
                    if following.strip().startswith("$ "):
                        break
                    shown.append(following)
                output = "\n".join(shown).strip("\n") if prompt_only else None
            out.append(Command(f"{block.where}+{n + 1}", tuple(words), tuple(env), output))
    return out


def _join_continuations(lines: Sequence[str]) -> list[str]:
    joined: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


# ----------------------------------------------------------------------------- checking


def stored_events(stored: Iterable[Any]) -> list[dict[str, Any]]:
    """The fake Loki's entries as flat dicts: labels, structured metadata and the line's fields."""
    events = []
    for entry in stored:
        event: dict[str, Any] = dict(entry.labels)
        event.update(dict(entry.metadata))
        try:
            line = json.loads(entry.line)
        except ValueError:
            line = {"message": entry.line}
        event.update({k: line.get(k) for k in ("message", "metadata", "exception") if k in line})
        events.append(event)
    return events


def unmatched(expects: Sequence[Expect], events: Sequence[dict[str, Any]]) -> list[str]:
    """What is wrong, as lines: expected events with no stored event, stored events no
    expectation accounts for. Each stored event serves one expectation (a bipartite matching)."""
    slots = [e for e in expects for _ in range(e.count)]
    owner: dict[int, int] = {}  # event index -> slot index

    def assign(slot: int, seen: set[int]) -> bool:
        for i, event in enumerate(events):
            if i in seen or not all(m.matches(event) for m in slots[slot].matchers):
                continue
            seen.add(i)
            if i not in owner or assign(owner[i], seen):
                owner[i] = slot
                return True
        return False

    missing = [str(slots[s]) for s in range(len(slots)) if not assign(s, set())]
    problems = [f"expected, not stored: {m}" for m in missing]
    problems += [f"stored, not expected: {_brief(e)}" for i, e in enumerate(events)
                 if i not in owner]
    return problems


def substitute_url(text: str, url: str) -> str:
    return text.replace(DOCS_URL, url)


def check_loki_urls(block_text: str, where: str) -> None:
    """Snippets reach Loki only as ``http://loki:3100`` (the test points that at its fake)."""
    for match in re.finditer(r"https?://[\w.-]+:3100\b", block_text):
        if match.group(0) != DOCS_URL:
            raise SnippetError(f"{where}: write Loki's URL as {DOCS_URL} in snippets, "
                               f"not {match.group(0)}")


def _lookup(event: dict[str, Any], key: str) -> tuple[bool, Any]:
    if not key.startswith("metadata."):
        return key in event, event.get(key)
    value: Any = event.get("metadata")
    for part in key.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _brief(event: dict[str, Any]) -> str:
    keys = ("service_name", "level", "actor", "type", "logger", "actor_id", "trace_id", "message")
    return " ".join(f"{k}={event[k]!r}" for k in keys if event.get(k) is not None)


def iter_lines(text: str) -> Iterator[str]:
    yield from (line.rstrip() for line in text.strip("\n").splitlines())


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name
