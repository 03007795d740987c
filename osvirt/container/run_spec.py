"""The Spec of the simple case: what `osvirt container run` and Container.run give a command."""
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from osvirt.container import oci
from osvirt.container.rootfs import HOST_ROOT_ANNOTATION

__all__ = ["spec_for", "parse_size"]

_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from an int or "64m", "1.5G", "512KiB" (binary units, as `docker run --memory` reads them)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise ValueError(f"size {text!r}: a number of bytes, or with k, m, g or t (binary units)")
    return int(float(match.group(1)) * (1 << (10 * " kmgt".index(match.group(2).lower() or " "))))


def spec_for(argv: Sequence[str], *, rootfs: str | None = None, memory: int | str | None = None,
             cpus: float | None = None, pids: int | None = None, hostname: str = "osvirt",
             rootless: bool | None = None, seccomp: str = "docker-default", net: str = "none",
             volumes: Iterable[tuple[str, str, bool]] = (), env: Iterable[str] | None = None, cwd: str = "/",
             readonly: bool = False) -> oci.Spec:
    """The Spec `osvirt container run` and Container.run give a command: docker.oci_config's, and the flags.

    `rootfs` None: the host's /usr, read-only, with private /tmp, /proc and
    /dev (mounts.host_usr_root, built on /mnt in the container's mount
    namespace). `rootless` None: when this process lacks CAP_SYS_ADMIN,
    uid 0 inside mapped to this process's uid (a user namespace). `net`:
    "none", "loopback" or "veth" (a network namespace of its own, lo up as
    runc brings it up; Container.run adds the veth pair) or "host" (the
    host's); `volumes` are (host, guest, read_only).
    """
    from osvirt import env as _env
    from osvirt.container import docker
    if rootless is None:
        rootless = "CAP_SYS_ADMIN" not in _env.capabilities()
    if seccomp not in ("docker-default", "none"):
        raise ValueError(f"seccomp: {seccomp!r} is not docker-default or none")
    if net not in ("none", "loopback", "host", "veth"):
        raise ValueError(f"net: {net!r} is not none, loopback, veth or host")
    volumes = [(os.path.abspath(h), g, bool(ro)) for h, g, ro in volumes]
    root = os.path.abspath(rootfs) if rootfs else "/mnt"
    environment = list(env) if env is not None else [_DEFAULT_PATH, "HOME=/root", f"HOSTNAME={hostname}"]
    config: dict[str, Any] = docker.oci_config(root, list(argv), cwd=cwd, env=environment, binds=volumes,
                                               hostname=hostname, network=net != "host")
    linux: dict[str, Any] = config["linux"]
    if seccomp == "none":
        del linux["seccomp"]
    if rootfs is None:
        config["annotations"] = {HOST_ROOT_ANNOTATION: "host-usr"}
        first_bind = next((i for i, m in enumerate(config["mounts"]) if m["type"] == "bind"), len(config["mounts"]))
        config["mounts"].insert(first_bind, {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                             "options": ["nosuid", "nodev", "mode=1777"]})  # under the volumes
    config["root"]["readonly"] = readonly
    resources: dict[str, Any] = {}
    if memory is not None:
        resources["memory"] = {"limit": parse_size(memory)}
    if cpus is not None:
        if not cpus > 0:
            raise ValueError(f"cpus: {cpus!r} must be above 0")
        resources["cpu"] = {"quota": int(cpus * 100000), "period": 100000}
    if pids is not None:
        resources["pids"] = {"limit": pids}
    if resources:
        linux["resources"] = {**linux.get("resources", {}), **resources}
    if rootless:
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        for m in config["mounts"]:
            if m["type"] == "devpts":
                m["options"] = [o for o in m["options"] if not o.startswith("gid=")]
        # as runc's rootless spec: the device cgroup is not ours to set
        if resources:
            linux["resources"].pop("devices", None)
        else:
            linux.pop("resources", None)
    return oci.parse(config, os.getcwd())
