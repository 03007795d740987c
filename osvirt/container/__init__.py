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
from osvirt.container import capabilities, mounts, namespaces, network, oci
from osvirt.container.cgroups import Cgroup
from osvirt.container.container import Container, ContainerError
from osvirt.container.seccomp import ACTIONS, OPERATORS, SYSCALLS, Filter, Instruction, compile_filter, install

__all__ = ["ACTIONS", "OPERATORS", "SYSCALLS", "Filter", "Instruction", "compile_filter", "install", "Cgroup",
           "Container", "ContainerError", "capabilities", "mounts", "namespaces", "network", "oci"]
