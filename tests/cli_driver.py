"""Many command lines through `extmm.cli.main` (what `python -m extmm` runs) in ONE child process.

Each case gets its own stderr, exit code, traceback check, environment overrides and default
journal folder; the commands' handlers run for real, without paying the interpreter and
import start-up once per case. Tests that check a command's process itself (signals, the
`python -m extmm` entry, exit on a real signal) keep running `python -m extmm`.

Input on stdin: a JSON list of `[name, argv, env_overrides]` (a None value unsets the
variable); output: one line
`CASE [name, exit_code, stderr]` per case, in order (stderr as file descriptor 2 saw it).
"""

from __future__ import annotations

import json
from typing import Any

DRIVER = """
import json, os, sys, tempfile, traceback
from extmm.cli import main
base = dict(os.environ)
results = os.fdopen(os.dup(1), "w")  # the case results; fd 1 and 2 are each case's own
for name, argv, env in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(base)
    for key, value in env.items():  # None: unset
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(dir=".")  # each case its own default journal
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # At the descriptors, as a process of its own would be: log sinks bound to stderr included.
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        err.seek(0)
        text = err.read().decode(errors="replace")
    print("CASE " + json.dumps([name, code, text]), file=results, flush=True)
"""


def cases_input(cases: list[tuple[str, list[str], dict[str, str | None]]]) -> str:
    return json.dumps([[name, argv, env] for name, argv, env in cases])


def parse_results(stdout: str, names: list[str], stderr: str = "") -> list[tuple[str, int, str]]:
    """The per-case results; fails naming the case the child stopped at, if it did."""
    results: list[Any] = [json.loads(line[5:]) for line in stdout.splitlines() if line.startswith("CASE [")]
    done = [r[0] for r in results]
    assert done == names, f"the driver stopped after {done[-1:] or 'nothing'}: {stderr[-2000:]}"
    return [(name, int(code), err) for name, code, err in results]


def verdict(err: str) -> list[str]:
    """stderr without log lines (loguru's "time | LEVEL | ..."): the verdict is what remains."""
    return [x for x in err.strip().splitlines() if " | " not in x]
