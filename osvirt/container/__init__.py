"""OS-level virtualization (seed §2, §5): what a container runtime assembles.

`osvirt.container.docker` holds what `docker run` gives a container by
default (capabilities, the seccomp profile, masked and read-only paths) and
writes the OCI config a runtime such as runc runs. `osvirt.container.seccomp`
compiles such a seccomp profile to the BPF program the kernel runs on every
system call, and installs it. `osvirt.container.cgroups` makes cgroups with
memory, CPU and pids limits, on cgroup v2 or v1 (whichever holds each
controller here), and reads back what the kernel counted.
`osvirt.container.namespaces` makes and enters namespaces (uid 0 inside an
unprivileged uid's own user namespace: rootless), and
`osvirt.container.capabilities` reads and limits a process's five
capability sets. `osvirt.container.mounts` assembles a container's
filesystem in its own mount namespace (proc, sysfs, a minimal /dev, Docker's
masked and read-only paths) and pivots into it.
`osvirt.container.network` brings a new network namespace's lo up, lists
its interfaces, and links it to the host with a veth pair of link-local
addresses. `osvirt.container.oci` reads an OCI runtime-spec config.json into checked,
typed objects, and `osvirt.container.container.Container` runs one as runc
does (create, start, state, kill, wait, delete), or a command or a Python
callable for the simple case (`Container.run`).
"""
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from osvirt.container import capabilities, mounts, namespaces, network, oci
    from osvirt.container.cgroups import Cgroup
    from osvirt.container.container import Container, ContainerError
    from osvirt.container.seccomp import ACTIONS, OPERATORS, SYSCALLS, Filter, Instruction, compile_filter, install

__all__ = ["ACTIONS", "OPERATORS", "SYSCALLS", "Filter", "Instruction", "compile_filter", "install", "Cgroup",
           "Container", "ContainerError", "capabilities", "mounts", "namespaces", "network", "oci"]

# Each name's module, imported at the first use of the name (PEP 562): `import osvirt.container` alone, or
# `osvirt-runtime state`, loads neither the C extension nor the records of oci.
_WHERE = {"capabilities": None, "mounts": None, "namespaces": None, "network": None, "oci": None,
          "Cgroup": "cgroups", "Container": "container", "ContainerError": "container",
          **{name: "seccomp" for name in ("ACTIONS", "OPERATORS", "SYSCALLS", "Filter", "Instruction",
                                          "compile_filter", "install")}}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_WHERE[name] or name}")
    value = module if _WHERE[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
