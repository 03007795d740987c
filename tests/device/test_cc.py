"""The C compiler helper: values from headers, diagnostics of a snippet."""
import pytest

from osvirt.device import cc


@pytest.mark.needs("cc")
def test_header_values_evaluate_macros():
    assert cc.header_values(["EBUSY", "O_RDWR"], ["errno.h", "fcntl.h"]) == {"EBUSY": 16, "O_RDWR": 2}


@pytest.mark.needs("cc")
def test_compile_source_returns_the_diagnostics():
    code, diagnostics, _ = cc.compile_source("int main(void) { return undeclared(); }\n",
                                             ["-fsyntax-only", "-Werror=implicit-function-declaration"])
    assert code != 0 and "undeclared" in diagnostics
    code, _, out = cc.compile_source('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n', run=True)
    assert code == 0 and out == "hi\n"


@pytest.mark.parametrize("names, includes", [(["A B"], []), (["X"], ["../x.h; rm"]), ([1], [])])
def test_bad_names_raise(names, includes):
    with pytest.raises(ValueError):
        cc.header_values(names, includes)


def test_flags_must_be_options():
    with pytest.raises(ValueError):
        cc.compile_source("", ["-o/etc/x"])
    with pytest.raises(TypeError):
        cc.compile_source(b"int x;")
