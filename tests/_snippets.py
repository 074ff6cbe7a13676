"""Commands and Python snippets of the README and docs/*.md, as the reader sees them.

``doc_commands()`` -> (where, argv) for every shell command in a fenced block and every inline
code span that starts with a program of this project (``c2fmae-data``, ``python``, ``torchrun``,
``ray``); continuation lines joined, comments dropped, ``a && b`` split, env assignments and
``flock LOCK`` prefixes removed, optional ``[...]`` groups kept (their ``...`` / ``|``
alternatives dropped). ``doc_python_blocks()`` -> (where, source) for every fenced python block.
``check_command(argv, full)`` raises ``AssertionError`` naming what does not exist or does not
parse.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("c2fmae-data", "python", "python3", "torchrun", "ray")
FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def _where(path: Path, text: str, pos: int) -> str:
    return f"{path.relative_to(REPO)}:{text.count(chr(10), 0, pos) + 1}"


def doc_python_blocks() -> "list[tuple[str, str]]":
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == "python":
                out.append((_where(path, text, m.start()), _dedent(m.group(2))))
    return out


def _dedent(block: str) -> str:
    lines = block.splitlines()
    pad = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
    return "\n".join(l[pad:] for l in lines) + "\n"


def _split_commands(text: str) -> "list[list[str]]":
    text = re.sub(r"\\\n", " ", text)
    cmds = []
    for line in text.splitlines():
        try:
            toks = shlex.split(line, comments=True)
        except ValueError:
            continue
        cur: list = []
        for t in toks + ["&&"]:
            if t in ("&&", ";", "||"):
                if cur:
                    cmds.append(cur)
                cur = []
            else:
                cur.append(t)
    return [c for c in (_strip_prefix(c) for c in cmds) if c and c[0] in PROGRAMS]


def _strip_prefix(argv: "list[str]") -> "list[str]":
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        argv = argv[1:]
    if argv[:1] == ["flock"]:
        argv = argv[2:]
    return _expand_optional(argv)


def _expand_optional(argv: "list[str]") -> "list[str]":
    """``[--full]`` -> ``--full``; ``[--grid g.png --n 16]`` -> its tokens; a group holding
    ``...`` or ``a|b`` alternatives is dropped."""
    out, group = [], None
    for t in argv:
        if group is None and t.startswith("["):
            group, t = [], t[1:]
        if group is None:
            out.append(t)
            continue
        end = t.endswith("]")
        group.append(t[:-1] if end else t)
        if end:
            if not any("..." in g or "|" in g for g in group):
                out.extend(g for g in group if g)
            group = None
    return out


def doc_commands() -> "list[tuple[str, list[str], bool]]":
    """(where, argv, full): ``full`` for a fenced command, False for an inline span."""
    out = []
    for path in DOCS:
        text = path.read_text()
        fenced = [(m.start(), m.end()) for m in FENCE.finditer(text)]
        for m in FENCE.finditer(text):
            if m.group(1) in ("bash", "sh", ""):
                out += [(_where(path, text, m.start()), c, True)
                        for c in _split_commands(m.group(2))]
        for m in INLINE.finditer(text):
            span = m.group(1)
            if (any(a <= m.start() < b for a, b in fenced) or " " not in span
                    or "<" in span or "..." in span):   # a bare name or a placeholder
                continue
            out += [(_where(path, text, m.start()), c, False) for c in _split_commands(span)]
    return out


# ----------------------------------------------------------------------------- checking
# A fenced command is checked in full: its arguments parse with the real parser. An inline span
# in prose may name a command with only some of its arguments, so there every ``--option`` it
# names must be one the parser knows.
def _check_args(parser, argv: "list[str]", what: str, full: bool) -> None:
    if not full:
        known = {o for a in parser._actions for o in a.option_strings}
        bad = [t.split("=")[0] for t in argv if t.startswith("--") and t.split("=")[0] not in known]
        assert not bad, f"{what}: unknown option(s) {bad}"
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{what} {' '.join(argv)}: does not parse ({err.getvalue().strip()})"
                             ) from None


def _parser_of(module: str):
    """The module's ``build_parser()``, or None for a command that takes no arguments."""
    mod = importlib.import_module(module)
    return mod.build_parser() if hasattr(mod, "build_parser") else None


def check_module(module: str, args: "list[str]", full: bool) -> None:
    if module in ("pip", "pytest"):
        return
    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    if module.startswith("bench."):   # bench scripts build their parser in main()
        return
    parser = _parser_of(module)
    if parser is None:
        assert not args, f"python -m {module} takes no arguments, the docs pass {args}"
        return
    _check_args(parser, args, f"python -m {module}", full)


def check_script(path: str, args: "list[str]", full: bool) -> None:
    assert (REPO / path).is_file(), f"{path}: no such file"
    if path.endswith(".py") and not path.startswith("bench/"):
        check_module(path[:-3].replace("/", "."), args, full)


def check_cli(argv: "list[str]", full: bool) -> None:
    from c2fmae_data.cli import build_parser

    parser = build_parser()
    words, rest = ["c2fmae-data"], argv[1:]
    while rest:   # descend through sub-commands: c2fmae-data weights download ...
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        assert rest[0] in subs[0].choices, f"{' '.join(words)} {rest[0]}: no such command"
        parser = subs[0].choices[rest[0]]
        words, rest = words + [rest[0]], rest[1:]
    _check_args(parser, rest, " ".join(words), full)


def check_python(argv: "list[str]", full: bool) -> None:
    rest = argv[1:]
    if rest[:1] == ["-c"]:
        run_imports(rest[1], "python -c")
    elif rest[:1] == ["-m"]:
        check_module(rest[1], rest[2:], full)
    elif rest:
        check_script(rest[0], rest[1:], full)


def check_ray(argv: "list[str]", full: bool) -> None:
    verb = argv[1] if len(argv) > 1 else ""
    if verb in ("up", "down", "submit", "attach", "exec") and len(argv) > 2:
        cfg = REPO / argv[2]
        assert cfg.is_file(), f"ray {verb} {argv[2]}: no such cluster yaml"
        yaml.safe_load(cfg.read_text())
    if verb == "submit" and len(argv) > 3:
        script_args = argv[argv.index("--") + 1:] if "--" in argv else []
        check_script(argv[3], script_args, full)
    if verb == "job" and "--" in argv:
        check_command(argv[argv.index("--") + 1:], full)


def check_command(argv: "list[str]", full: bool = True) -> None:
    prog = argv[0]
    if prog == "c2fmae-data":
        check_cli(argv, full)
    elif prog in ("python", "python3"):
        check_python(argv, full)
    elif prog == "torchrun":
        assert "-m" in argv, f"{' '.join(argv)}: torchrun without -m MODULE"
        i = argv.index("-m")
        check_module(argv[i + 1], argv[i + 2:], full)
    elif prog == "ray":
        check_ray(argv, full)


def run_imports(source: str, where: str) -> None:
    """Execute every import statement of ``source`` (top level and nested)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            code = ast.unparse(node)
            try:
                exec(compile(code, where, "exec"), {})
            except ImportError as e:
                raise AssertionError(f"{where}: `{code}` fails: {e}") from None
