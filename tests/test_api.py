"""Every public module says what it exports, and all of it exists."""
import importlib
import pkgutil

import pytest

import osvirt

MODULES = sorted(m.name for m in pkgutil.walk_packages(osvirt.__path__, "osvirt.")
                 if not any(part.startswith("_") for part in m.name.split("."))
                 and not m.name.startswith("osvirt.demos"))


@pytest.mark.parametrize("name", MODULES)
def test_public_module_exports_explicitly(name):
    module = importlib.import_module(name)
    public = [n for n, v in vars(module).items()
              if not n.startswith("_") and getattr(v, "__module__", None) == name and callable(v)]
    if not public and not hasattr(module, "__all__"):
        assert hasattr(module, "__path__"), f"{name} defines nothing public"
        return  # a package that only holds modules: each is checked on its own
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    assert not set(public) - set(module.__all__), f"{name}: public but not in __all__: {set(public) - set(module.__all__)}"
