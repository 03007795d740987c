"""The C compiler, asked what the system headers say.

`header_values` compiles and runs a small program that prints macros from the
headers (ioctl request numbers, constants), so Python's own encoding can be
checked against them; `compile_source` compiles a snippet and returns the
compiler's diagnostics (the seed's examples, as written). Both work in a
private temporary directory, removed afterwards. osvirt.env.can("cc") says
whether a compiler is here.
"""
import os
import re
import shutil
import subprocess
from collections.abc import Iterable

from osvirt.errors import OsvirtError
from osvirt.naming import private_dir
from osvirt.process import Children

__all__ = ["compiler", "header_values", "compile_source"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER = re.compile(r"[A-Za-z0-9_./-]+\.h\Z")


def compiler() -> str | None:
    """The path of cc or gcc, or None."""
    return shutil.which("cc") or shutil.which("gcc")


def _cc() -> str:
    cc = compiler()
    if cc is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH")
    return cc


def compile_source(source: str, flags: Iterable[object] = (), *, run: bool = False,
                   timeout_s: float = 60) -> tuple[int, str, str]:
    """Compile C `source` (with `flags`) in a private directory.

    Returns (returncode, diagnostics, output): the compiler's exit status and
    stderr, and the program's stdout when `run` and it compiled (else "").
    """
    if not isinstance(source, str):
        raise TypeError(f"compile_source: source must be str, not {type(source).__name__}")
    options = [str(f) for f in flags]
    if any(not f.startswith("-") or f.startswith("-o") for f in options):
        raise ValueError(f"compile_source: flags must be options (not -o or file names): {options}")
    # Children: the compiler and the program are killed and reaped however
    # this returns (Ctrl-C included), and die with this process.
    with private_dir() as d, Children() as kids:
        src, exe = os.path.join(d, "snippet.c"), os.path.join(d, "snippet")
        with open(src, "w") as f:
            f.write(source)
        argv = [_cc(), *options, src] + ([] if "-fsyntax-only" in options else ["-o", exe])
        code, _, diagnostics = _run(kids, argv, d, timeout_s)
        diagnostics = diagnostics.replace(src, "snippet.c")
        if code != 0 or not run:
            return code, diagnostics, ""
        status, out, err = _run(kids, [exe], d, timeout_s)
        if status != 0:
            raise OsvirtError(f"compile_source: the program exited with {status}: {err}")
        return code, diagnostics, out


def _run(kids: Children, argv: list[str], cwd: str, timeout_s: float) -> tuple[int, str, str]:
    proc = kids.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def header_values(names: Iterable[str], includes: Iterable[str]) -> dict[str, int]:
    """{macro: value} as the compiler evaluates each name after `includes`."""
    names, includes = list(names), list(includes)
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"header_values: {name!r} is not a C identifier")
    for header in includes:
        if not isinstance(header, str) or not _HEADER.match(header):
            raise ValueError(f"header_values: {header!r} is not a header name")
    source = "".join(f"#include <{h}>\n" for h in includes) + "#include <stdio.h>\nint main(void)\n{\n"
    source += "".join(f'    printf("{n} %llu\\n", (unsigned long long)({n}));\n' for n in names)
    source += "    return 0;\n}\n"
    code, diagnostics, out = compile_source(source, ["-D_GNU_SOURCE"], run=True)
    if code != 0:
        raise OsvirtError(f"header_values: the program did not compile:\n{diagnostics}")
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}
