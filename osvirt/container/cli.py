"""`osvirt container run`: a command in a container, as `docker run --rm --init` would run it.

    osvirt container run [--rootfs DIR] [--memory SIZE] [--cpus N] [--pids N] [--hostname NAME]
                         [--rootless] [--seccomp docker-default|none] [--net none|loopback|veth]
                         [--volume HOST:GUEST[:ro]] [--no-init] -- CMD...

The spec is docker.oci_config's (Docker's 14 capabilities, its seccomp
profile, masked and read-only paths) with the flags applied
(container.spec_for), run by osvirt.container.Container. Without --rootfs the
root is a read-only view of the host's /usr with private /tmp, /proc and
/dev. The exit status is CMD's, 128 + N when signal N killed it (as a shell
says); SIGINT, SIGTERM and SIGHUP received here go to the container, whose
init passes them to CMD. Only argparse runs at import: the work imports
what it needs when it runs.
"""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add `container run` to `osvirt`'s subparsers (osvirt.cli.AREA_COMMANDS)."""
    container = sub.add_parser("container", help="run a command in a container (namespaces, cgroup, seccomp)")
    commands = container.add_subparsers(dest="container_command", required=True)
    run_parser = commands.add_parser(
        "run", help="run CMD in a new container and exit with its status",
        description="Run CMD in a container made of Docker's defaults (capabilities, seccomp, masked paths), "
                    "with its own PID, IPC, UTS, mount and network namespaces, and exit with CMD's status.")
    run_parser.add_argument("--rootfs", metavar="DIR", help="the root filesystem (default: the host's /usr, read-only)")
    run_parser.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 64m (binary units); swap too")
    run_parser.add_argument("--cpus", metavar="N", type=float, help="CPU quota in CPUs, e.g. 0.5")
    run_parser.add_argument("--pids", metavar="N", type=int, help="most processes and threads at once")
    run_parser.add_argument("--hostname", metavar="NAME", default="osvirt", help="the container's hostname")
    run_parser.add_argument("--rootless", action="store_true", default=None,
                            help="uid 0 inside mapped to this uid (a user namespace); the default without "
                                 "CAP_SYS_ADMIN")
    run_parser.add_argument("--seccomp", choices=("docker-default", "none"), default="docker-default",
                            help="the seccomp profile (default: Docker's)")
    run_parser.add_argument("--net", choices=("none", "loopback", "veth"), default="none",
                            help="a network namespace with lo up (none, loopback), or a veth pair to the host too")
    run_parser.add_argument("--volume", "-v", metavar="HOST:GUEST[:ro]", action="append", default=[],
                            help="bind HOST on GUEST (read-only with :ro); repeatable")
    run_parser.add_argument("--no-init", dest="init", action="store_false", default=None,
                            help="CMD is PID 1 itself (default: osvirt's init is, reaping orphans and passing "
                                 "signals, unless CMD is an init: tini, dumb-init, ...)")
    run_parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command and its arguments")
    run_parser.set_defaults(run=run)


def _volume(text: str) -> tuple[str, str, bool]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"--volume {text!r}: HOST:GUEST or HOST:GUEST:ro")
    return parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"


def run(args: argparse.Namespace) -> int | str:
    """`osvirt container run`: its exit status (CMD's; 128 + N for signal N), or a message on a failure."""
    import contextlib
    import signal

    from osvirt.container.container import Container
    from osvirt.errors import OsvirtError

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        return "osvirt container run: no command given (osvirt container run [OPTIONS] -- CMD...)"
    try:
        volumes = [_volume(v) for v in args.volume]
        container = Container.run(cmd, init=args.init, rootfs=args.rootfs, memory=args.memory, cpus=args.cpus,
                                  pids=args.pids, hostname=args.hostname, rootless=args.rootless,
                                  seccomp=args.seccomp, net=args.net, volumes=volumes)
    except (OsvirtError, ValueError, OSError) as e:
        return f"osvirt container run: {e}"
    with container:
        def forward(signo: int, frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                container.kill(signo)

        for signo in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signo, forward)
        code = container.wait()
    return code if code >= 0 else 128 - code
