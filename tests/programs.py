"""Which programs the tests and the image builds start, read from their source.

`started()` finds them in two kinds of file:
- Python (tests/): the first word of a command given to `subprocess.*`,
  `asyncio.create_subprocess_exec`, `shutil.which` or a module's own helper that passes its
  arguments on to one of those, and every `executable_path=` (Playwright's browser).
- Shell (tests/run.sh and the image scripts that run on the build host): every word in command
  position, less shell keywords and builtins, variables, `case` patterns, heredoc bodies and what
  runs inside the image (`chroot ROOT ...`).

tests/test_programs.py checks that each program found is installed by tests/run.sh or comes with a
minimal Debian 12 system, so that a fresh machine can run the README's test command.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Shell scripts whose commands run on the build or test host (image/deb/post* and
# tests/vm/agent.sh run on the device or in the test machine, not here).
HOST_SCRIPTS = (
    "tests/run.sh",
    ".ci/run",
    "image/build.sh",
    "image/wheels.sh",
    "image/deb/build.sh",
    "image/vm/build.sh",
    "image/hooks/system.sh",
)

_RUNNERS = {
    "run",
    "Popen",
    "call",
    "check_call",
    "check_output",
    "create_subprocess_exec",
    "which",
}
_SHELL_WORDS = {
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
    "in", "!", "{", "}", "set", "cd", "exec", "exit", "trap", "export", "shift", "return",
    "local", "read", "eval", "test", "[", "]", "echo", "printf", "true", "false", ":", ".",
    "unset", "wait", "command", "type", "umask", "ulimit", "break", "continue",
}  # fmt: skip
_CASE_PATTERN = re.compile(r"^\s*\(?[\w*.|-]+\)(\s|$)")  # `amd64|arm64) ...` in a case
_MMDEBSTRAP_SPECIALS = ("copy-", "sync-", "tar-", "upload", "download")
_OPENERS = {"if", "then", "else", "elif", "do", "!", "{", "while", "until"}
_CONTROL = {";", "&&", "||", "|", "(", ")", ";;", "&", "$(", "`"}


def _callee_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def _program(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The program a command argument names: "ip" for ["ip", ...] or "ip" (or a module constant
    that holds one); None otherwise."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        node = node.elts[0]
    if isinstance(node, ast.Name) and node.id in constants:
        node = ast.Constant(constants[node.id])
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
        word = node.value.split()[0] if " " in node.value else node.value
        return word.rsplit("/", 1)[-1] if word.startswith("/") else word
    return None


def _is_subprocess_call(call: ast.Call, module_runners: set[str]) -> bool:
    name = _callee_name(call)
    f = call.func
    if name in module_runners and isinstance(f, ast.Name):
        return True
    if not isinstance(f, ast.Attribute) or name not in _RUNNERS:
        return False
    owner = f.value
    return isinstance(owner, ast.Name) and owner.id in ("subprocess", "asyncio", "shutil")


def _helpers(tree: ast.Module) -> set[str]:
    """Module-level functions that hand their first parameter to a subprocess call as the
    command (`def run(*args): subprocess.run(args, ...)`): calls to them start programs too."""
    found = set()
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        params = [a.arg for a in fn.args.args] + ([fn.args.vararg.arg] if fn.args.vararg else [])
        if not params:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and _is_subprocess_call(node, set()) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Starred):
                    first = first.value
                if isinstance(first, ast.Name) and first.id == params[0]:
                    found.add(fn.name)
    return found


def python_programs(path: Path) -> Iterator[tuple[str, int]]:
    """(program, line) for each program a Python file starts."""
    tree = ast.parse(path.read_text(), str(path))
    helpers = _helpers(tree)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if _is_subprocess_call(node, helpers) and node.args:
            first = node.args[0]
            program = _program(first, constants)
            if program is None and _callee_name(node) in helpers:  # run("sfdisk", "-J", card)
                program = _program(ast.List(elts=list(node.args), ctx=ast.Load()), constants)
            if program is not None:
                yield program, node.lineno
        for keyword in node.keywords:
            if keyword.arg == "executable_path":
                program = _program(keyword.value, constants)
                if program is not None:
                    yield program, node.lineno


def _logical_lines(text: str) -> Iterator[tuple[str, int]]:
    """(line, number): continuations joined, multi-line quotes kept whole, heredoc bodies left
    out."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i]
        i += 1
        while i < len(lines):
            if line.endswith("\\"):
                line = line[:-1] + " " + lines[i]
            else:
                try:
                    shlex.split(line, comments=True)
                    break
                except ValueError:  # an open quote: the string goes on
                    line += "\n" + lines[i]
            i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if heredoc:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        yield line, number


def shell_programs(path: Path) -> Iterator[tuple[str, int]]:
    """(program, line) for each program a shell script starts on this machine."""
    return _shell_text(path.read_text())


def _shell_text(text: str) -> Iterator[tuple[str, int]]:
    for line, number in _logical_lines(text):
        line = _CASE_PATTERN.sub("", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()`<>")
        lexer.commenters = "#"
        lexer.wordchars += "$:/.-=[]{}!,@%+*?"
        try:
            tokens = list(lexer)
        except ValueError:
            continue
        for token in tokens:  # mmdebstrap's hooks are shell commands on this machine too
            hook = re.match(r"--(setup|extract|essential|customize)-hook=(.*)", token, re.S)
            if hook and not hook.group(2).startswith(_MMDEBSTRAP_SPECIALS):
                yield from ((p, number) for p, _ in _shell_text(hook.group(2)))
        yield from _commands(tokens, number)


def _commands(tokens: list[str], number: int) -> Iterator[tuple[str, int]]:
    """The programs in command position among one logical line's tokens."""
    command_position = True
    in_image = False  # after `chroot ROOT`: the rest of this command runs inside the image
    redirect_target = False
    for index, token in enumerate(tokens):
        if redirect_target:
            redirect_target = False
            continue
        if token[0] in "<>":  # a redirection: its target is no command
            redirect_target = True
            continue
        if token in _CONTROL:
            command_position, in_image = True, False
            continue
        if not command_position or in_image:
            continue
        if token in _OPENERS or "=" in token and not token.startswith("-"):
            continue  # `then cmd`, `VAR=value cmd`: the command is still to come
        command_position = False
        nxt = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token in _SHELL_WORDS or nxt == ")" or token.startswith(("$", '"', "'", "-")):
            continue  # a builtin, a case pattern, a variable
        program = token.rsplit("/", 1)[-1] if token.startswith("/") else token
        if "/" in program or not program:
            continue  # a script of ours, by its path
        in_image = program == "chroot"
        yield program, number


def started() -> dict[str, list[str]]:
    """Every program the tests and host scripts start: program -> the places that start it."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for program, line in python_programs(path):
            found.setdefault(program, []).append(f"{path.relative_to(ROOT)}:{line}")
    for name in HOST_SCRIPTS:
        for program, line in shell_programs(ROOT / name):
            found.setdefault(program, []).append(f"{name}:{line}")
    return found


def installed_by_run_sh() -> set[str]:
    """The Debian packages tests/run.sh installs (tests/packages.txt)."""
    words = []
    for line in (ROOT / "tests/packages.txt").read_text().splitlines():
        words += line.split("#", 1)[0].split()
    return set(words)
