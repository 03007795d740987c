"""The OCI runtime-spec's config.json as typed objects: the one shape a container is described in.

A bundle is a directory holding `config.json` and (usually) the root
filesystem it names. `load(bundle)` reads it, `parse(config, bundle)` takes
a dict already in memory (`osvirt.container.docker.oci_config()` makes one),
and both return a `Spec` whose every field has been checked against the
runtime-spec (config.md, config-linux.md) before anything is done with it.
A bad value raises `osvirt.errors.SpecError`, naming the field as a path
into the JSON (`linux.namespaces[1].type`), before any system call. Fields
the spec does not define, or that osvirt does not act on, are ignored, as
the spec says a runtime must ignore unknown properties; `Spec.raw` keeps
the dict as given, and `Spec.to_dict()` writes back what was understood
(so `parse(d).to_dict() == d` for a config of known fields, such as
docker.oci_config()'s).

What is read, and what the Container (osvirt.container.container) does with it:

    ociVersion          1.x.y (SemVer, major 1)
    process             terminal, consoleSize, user (uid, gid, umask, additionalGids), args, env, cwd,
                        capabilities (five sets), rlimits, noNewPrivileges, oomScoreAdj
    root                path (relative to the bundle, or absolute), readonly
    hostname, domainname  (each needs a UTS namespace of the container's own)
    mounts              destination, type, source (a bind's relative to the bundle), options: the
                        mount(2) flags by name (`MOUNT_FLAGS`, `PROPAGATION`), bind/rbind, the rest
                        the filesystem's data
    hooks               prestart, createRuntime, createContainer, startContainer, poststart,
                        poststop: path, args, env, timeout (`run_hook` runs one, the state JSON on stdin)
    annotations         str -> str
    linux.namespaces    type (namespaces.KINDS), path (join that one instead of making one)
    linux.uidMappings, gidMappings   containerID, hostID, size (a new user namespace needs them)
    linux.resources     memory (limit, swap, ...), cpu (shares, quota, period, ...), pids (limit),
                        devices (kept, not enforced: no device cgroup is set up)
    linux.cgroupsPath   where the cgroup goes
    linux.seccomp       compiled here by osvirt.container.seccomp (`Seccomp.filter`): a profile the
                        compiler refuses is a SpecError
    linux.maskedPaths, readonlyPaths, sysctl, rootfsPropagation

`state(...)` builds the state JSON (the spec's runtime.md) a hook reads on
stdin and `osvirt-runtime state` prints.
"""
import functools
import json
import os
import re
import resource
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from osvirt.container import capabilities as _capabilities
from osvirt.container import namespaces as _namespaces
from osvirt.container import seccomp as _seccomp
from osvirt.errors import SpecError

__all__ = ["SpecError", "MOUNT_FLAGS", "PROPAGATION", "RLIMITS", "HOOK_KINDS", "STATUSES",
           "User", "Rlimit", "Capabilities", "Process", "Root", "Mount", "Hook", "Hooks", "Namespace",
           "IdMapping", "Memory", "Cpu", "Pids", "DeviceRule", "Resources", "SeccompArg", "SyscallRule",
           "Seccomp", "Linux", "Spec", "load", "parse", "state", "run_hook"]

# "RLIMIT_NOFILE" -> resource.RLIMIT_NOFILE, for each the resource module names.
RLIMITS: Mapping[str, int] = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
STATUSES = ("creating", "created", "running", "stopped")

_U32 = 0xFFFFFFFF
_I64_MAX = 2**63 - 1


def _mount_tables() -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    from osvirt.container.mounts import MS
    flags = {
        "defaults": (0, 0), "ro": (MS["RDONLY"], 0), "rw": (0, MS["RDONLY"]),
        "suid": (0, MS["NOSUID"]), "nosuid": (MS["NOSUID"], 0), "dev": (0, MS["NODEV"]), "nodev": (MS["NODEV"], 0),
        "exec": (0, MS["NOEXEC"]), "noexec": (MS["NOEXEC"], 0), "sync": (MS["SYNCHRONOUS"], 0),
        "async": (0, MS["SYNCHRONOUS"]), "dirsync": (MS["DIRSYNC"], 0), "remount": (MS["REMOUNT"], 0),
        "mand": (MS["MANDLOCK"], 0), "nomand": (0, MS["MANDLOCK"]), "atime": (0, MS["NOATIME"]),
        "noatime": (MS["NOATIME"], 0), "diratime": (0, MS["NODIRATIME"]), "nodiratime": (MS["NODIRATIME"], 0),
        "bind": (MS["BIND"], 0), "rbind": (MS["BIND"] | MS["REC"], 0), "relatime": (MS["RELATIME"], 0),
        "norelatime": (0, MS["RELATIME"]), "strictatime": (MS["STRICTATIME"], 0),
        "nostrictatime": (0, MS["STRICTATIME"]), "lazytime": (MS["LAZYTIME"], 0), "nolazytime": (0, MS["LAZYTIME"]),
        "nosymfollow": (MS["NOSYMFOLLOW"], 0), "symfollow": (0, MS["NOSYMFOLLOW"]),
    }
    propagation = {
        "private": MS["PRIVATE"], "rprivate": MS["PRIVATE"] | MS["REC"], "shared": MS["SHARED"],
        "rshared": MS["SHARED"] | MS["REC"], "slave": MS["SLAVE"], "rslave": MS["SLAVE"] | MS["REC"],
        "unbindable": MS["UNBINDABLE"], "runbindable": MS["UNBINDABLE"] | MS["REC"],
    }
    return flags, propagation


_flags, _propagation = _mount_tables()
MOUNT_FLAGS: Mapping[str, tuple[int, int]] = _flags
"""option -> (set, clear): the mount(2) flags an option sets and clears (runc's table, mount(8)'s names)."""
PROPAGATION: Mapping[str, int] = _propagation
"""Propagation options: applied by a mount call of their own, after the mount."""

# Options that ask for something osvirt does not do: refused rather than ignored (a mount that
# silently lacked its id-mapping would give files the wrong owners).
_UNSUPPORTED_OPTIONS = frozenset({"idmap", "ridmap", "tmpcopyup"})


# -- checks: each raises SpecError naming the field -------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _obj(value: object, field: str, required: bool = False) -> Mapping[str, Any]:
    if value is None:
        if required:
            raise SpecError(field, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(field, f"must be an object, not {type(value).__name__}")
    return value


def _str(value: object, field: str, required: bool = False, default: str | None = None) -> str | None:
    if value is None:
        if required:
            raise SpecError(field, "is required")
        return default
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, not {type(value).__name__}")
    if "\0" in value:
        raise SpecError(field, f"{value!r} holds a NUL byte")
    return value


def _req_str(value: object, field: str) -> str:
    text = _str(value, field, required=True)
    assert text is not None
    return text


def _abs_path(value: object, field: str) -> str:
    path = _req_str(value, field)
    if not os.path.isabs(path):
        raise SpecError(field, f"{path!r} must be an absolute path")
    return path


def _bool(value: object, field: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(field, f"must be true or false, not {value!r}")
    return value


def _int(value: object, field: str, low: int, high: int, required: bool = False) -> int | None:
    if value is None:
        if required:
            raise SpecError(field, "is required")
        return None
    if not _is_int(value):
        raise SpecError(field, f"must be an integer, not {value!r}")
    assert isinstance(value, int)
    if not low <= value <= high:
        raise SpecError(field, f"{value} not in {low}..{high}")
    return value


def _req_int(value: object, field: str, low: int, high: int) -> int:
    number = _int(value, field, low, high, required=True)
    assert number is not None
    return number


def _list(value: object, field: str, required: bool = False) -> Sequence[Any] | None:
    if value is None:
        if required:
            raise SpecError(field, "is required")
        return None
    if not isinstance(value, (list, tuple)):
        raise SpecError(field, f"must be an array, not {type(value).__name__}")
    return value


def _strs(value: object, field: str, required: bool = False) -> tuple[str, ...] | None:
    items = _list(value, field, required)
    if items is None:
        return None
    return tuple(_req_str(item, f"{field}[{i}]") for i, item in enumerate(items))


def _str_map(value: object, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    found = _obj(value, field)
    for key, item in found.items():
        _str(item, f"{field}.{key}", required=True)
    return dict(found)


def _env(value: object, field: str) -> tuple[str, ...] | None:
    found = _strs(value, field)
    for i, entry in enumerate(found or ()):
        if "=" not in entry or entry.startswith("="):
            raise SpecError(f"{field}[{i}]", f"{entry!r} is not NAME=VALUE")
    return found


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# -- process ------------------------------------------------------------------------------------
class User(NamedTuple):
    uid: int
    gid: int
    umask: int | None = None
    additional_gids: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"uid": self.uid, "gid": self.gid, "umask": self.umask,
                           "additionalGids": list(self.additional_gids) if self.additional_gids is not None else None})


class Rlimit(NamedTuple):
    type: str
    soft: int
    hard: int

    @property
    def resource(self) -> int:
        """The resource module's number for `type`."""
        return RLIMITS[self.type]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "hard": self.hard, "soft": self.soft}


class Capabilities(NamedTuple):
    """The five sets by name; None for a set the config leaves out (the kernel's empty set)."""
    bounding: tuple[str, ...] | None = None
    effective: tuple[str, ...] | None = None
    inheritable: tuple[str, ...] | None = None
    permitted: tuple[str, ...] | None = None
    ambient: tuple[str, ...] | None = None

    def usable(self, name: str) -> frozenset[str]:
        """Set `name` as this kernel knows it: names above its cap_last_cap dropped, as runc drops them."""
        caps = getattr(self, name) or ()
        return frozenset(c for c in caps if _capabilities.CAPABILITIES[c] <= _capabilities.KERNEL_LAST_CAP)

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({name: list(caps) if caps is not None else None for name, caps in self._asdict().items()})


class Process(NamedTuple):
    args: tuple[str, ...]
    cwd: str
    user: User
    env: tuple[str, ...] | None = None
    terminal: bool | None = None
    console_size: tuple[int, int] | None = None  # (height, width)
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] | None = None
    no_new_privileges: bool | None = None
    oom_score_adj: int | None = None

    def environ(self) -> dict[str, str]:
        """env as a dict (a later NAME overrides an earlier one, as execve's environ does for getenv)."""
        return dict(entry.split("=", 1) for entry in self.env or ())

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({
            "terminal": self.terminal,
            "consoleSize": {"height": self.console_size[0], "width": self.console_size[1]}
            if self.console_size else None,
            "user": self.user.to_dict(), "args": list(self.args),
            "env": list(self.env) if self.env is not None else None, "cwd": self.cwd,
            "capabilities": self.capabilities.to_dict() if self.capabilities else None,
            "rlimits": [r.to_dict() for r in self.rlimits] if self.rlimits is not None else None,
            "noNewPrivileges": self.no_new_privileges, "oomScoreAdj": self.oom_score_adj})


def _capability_set(value: object, field: str) -> tuple[str, ...] | None:
    names = _strs(value, field)
    for i, name in enumerate(names or ()):
        if name not in _capabilities.CAPABILITIES:
            raise SpecError(f"{field}[{i}]", f"{name!r} is not a capability "
                            "(osvirt.container.capabilities.CAPABILITIES lists them)")
    return names


def _process(value: object) -> Process | None:
    if value is None:
        return None
    p = _obj(value, "process")
    user_obj = _obj(p.get("user"), "process.user", required=True)
    gids = _list(user_obj.get("additionalGids"), "process.user.additionalGids")
    user = User(_req_int(user_obj.get("uid"), "process.user.uid", 0, _U32 - 1),
                _req_int(user_obj.get("gid"), "process.user.gid", 0, _U32 - 1),
                _int(user_obj.get("umask"), "process.user.umask", 0, 0o777),
                None if gids is None else tuple(_req_int(g, f"process.user.additionalGids[{i}]", 0, _U32 - 1)
                                                for i, g in enumerate(gids)))
    args = _strs(p.get("args"), "process.args", required=True)
    assert args is not None
    if not args:
        raise SpecError("process.args", "must name a program (at least one entry)")
    cwd = _abs_path(p.get("cwd"), "process.cwd")
    caps = None
    if p.get("capabilities") is not None:
        c = _obj(p.get("capabilities"), "process.capabilities")
        caps = Capabilities(**{name: _capability_set(c.get(name), f"process.capabilities.{name}")
                               for name in ("bounding", "effective", "inheritable", "permitted", "ambient")})
    rlimits = None
    if p.get("rlimits") is not None:
        found: list[Rlimit] = []
        for i, r in enumerate(_list(p.get("rlimits"), "process.rlimits") or ()):
            field = f"process.rlimits[{i}]"
            r = _obj(r, field)
            kind = _req_str(r.get("type"), f"{field}.type")
            if kind not in RLIMITS:
                raise SpecError(f"{field}.type", f"{kind!r} is not an RLIMIT_* this system has "
                                f"({', '.join(sorted(RLIMITS))})")
            if any(x.type == kind for x in found):
                raise SpecError(f"{field}.type", f"{kind} given twice")
            soft = _req_int(r.get("soft"), f"{field}.soft", 0, 2**64 - 1)
            hard = _req_int(r.get("hard"), f"{field}.hard", 0, 2**64 - 1)
            if soft > hard:
                raise SpecError(field, f"soft {soft} above hard {hard}")
            found.append(Rlimit(kind, soft, hard))
        rlimits = tuple(found)
    console = None
    if p.get("consoleSize") is not None:
        size = _obj(p.get("consoleSize"), "process.consoleSize")
        console = (_req_int(size.get("height"), "process.consoleSize.height", 0, 0xFFFF),
                   _req_int(size.get("width"), "process.consoleSize.width", 0, 0xFFFF))
    terminal = p.get("terminal")
    return Process(args, cwd, user, _env(p.get("env"), "process.env"),
                   None if terminal is None else _bool(terminal, "process.terminal"), console, caps, rlimits,
                   None if p.get("noNewPrivileges") is None else _bool(p.get("noNewPrivileges"),
                                                                         "process.noNewPrivileges"),
                   _int(p.get("oomScoreAdj"), "process.oomScoreAdj", -1000, 1000))


# -- root, mounts, hooks ------------------------------------------------------------------------
class Root(NamedTuple):
    path: str  # as the config gives it
    readonly: bool | None = None
    resolved: str = ""  # absolute: `path` joined to the bundle

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"path": self.path, "readonly": self.readonly})


class Mount(NamedTuple):
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] | None = None
    resolved_source: str | None = None  # a bind's source joined to the bundle when relative

    @property
    def flags(self) -> int:
        """The mount(2) flags the options set (MS_BIND, MS_RDONLY, ...), propagation aside."""
        return _mount_options(None if self.options is None else tuple(self.options))[0]

    @property
    def propagation(self) -> tuple[int, ...]:
        """The propagation changes the options ask for (MS_PRIVATE|MS_REC, ...), in order."""
        return _mount_options(None if self.options is None else tuple(self.options))[1]

    @property
    def data(self) -> str | None:
        """The options mount(2) passes to the filesystem ("mode=755,size=65536k"), or None."""
        return _mount_options(None if self.options is None else tuple(self.options))[2]

    @property
    def is_bind(self) -> bool:
        from osvirt.container.mounts import MS
        return self.type == "bind" or bool(self.flags & MS["BIND"])

    @property
    def recursive(self) -> bool:
        """Whether a bind takes the mounts under its source along (the rbind option)."""
        return "rbind" in (self.options or ())

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"destination": self.destination, "type": self.type, "source": self.source,
                           "options": list(self.options) if self.options is not None else None})


@functools.lru_cache(maxsize=256)  # a container's start reads each several times: worked out once
def _mount_options(options: tuple[str, ...] | None) -> tuple[int, tuple[int, ...], str | None]:
    """A mount's options as (mount(2) flags, propagation changes in order, the filesystem's data or None)."""
    flags = 0
    for option in options or ():
        if option in MOUNT_FLAGS:
            on, off = MOUNT_FLAGS[option]
            flags = (flags | on) & ~off
    rest = [o for o in options or () if o not in MOUNT_FLAGS and o not in PROPAGATION]
    return flags, tuple(PROPAGATION[o] for o in options or () if o in PROPAGATION), ",".join(rest) or None


def _mounts(value: object, bundle: str) -> tuple[Mount, ...] | None:
    items = _list(value, "mounts")
    if items is None:
        return None
    found = []
    for i, m in enumerate(items):
        field = f"mounts[{i}]"
        m = _obj(m, field)
        destination = _req_str(m.get("destination"), f"{field}.destination")
        if not os.path.isabs(destination):  # runtime-spec 1.1: relative to / (runc resolves it so)
            destination = "/" + destination
        if os.path.normpath(destination) == "/":
            raise SpecError(f"{field}.destination", "may not be / (the root is `root`)")
        kind = _str(m.get("type"), f"{field}.type")
        source = _str(m.get("source"), f"{field}.source")
        options = _strs(m.get("options"), f"{field}.options")
        for j, option in enumerate(options or ()):
            if option in _UNSUPPORTED_OPTIONS:
                raise SpecError(f"{field}.options[{j}]", f"{option!r} is not supported by osvirt")
        mount = Mount(destination, kind, source, options)
        if mount.is_bind:
            if not source:
                raise SpecError(f"{field}.source", "a bind mount needs a source")
            mount = mount._replace(resolved_source=os.path.join(bundle, source))
        elif not kind:
            raise SpecError(f"{field}.type", "is required for a mount that is not a bind")
        found.append(mount)
    return tuple(found)


class Hook(NamedTuple):
    path: str
    args: tuple[str, ...] | None = None
    env: tuple[str, ...] | None = None
    timeout: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"path": self.path, "args": list(self.args) if self.args is not None else None,
                           "env": list(self.env) if self.env is not None else None, "timeout": self.timeout})


class Hooks(NamedTuple):
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()
    given: frozenset[str] = frozenset()  # the kinds the config lists (for to_dict)

    def of(self, kind: str) -> tuple[Hook, ...]:
        """The hooks of `kind`, by the spec's name ("createRuntime")."""
        hooks: tuple[Hook, ...] = getattr(self, _snake(kind))
        return hooks

    def to_dict(self) -> dict[str, Any]:
        return {kind: [h.to_dict() for h in self.of(kind)] for kind in HOOK_KINDS if kind in self.given}


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def _hooks(value: object) -> Hooks | None:
    if value is None:
        return None
    h = _obj(value, "hooks")
    kinds: dict[str, tuple[Hook, ...]] = {}
    for kind in HOOK_KINDS:
        found = []
        for i, entry in enumerate(_list(h.get(kind), f"hooks.{kind}") or ()):
            field = f"hooks.{kind}[{i}]"
            entry = _obj(entry, field)
            found.append(Hook(_abs_path(entry.get("path"), f"{field}.path"), _strs(entry.get("args"), f"{field}.args"),
                              _env(entry.get("env"), f"{field}.env"),
                              _int(entry.get("timeout"), f"{field}.timeout", 1, 2**31 - 1)))
        kinds[_snake(kind)] = tuple(found)
    return Hooks(**kinds, given=frozenset(kind for kind in HOOK_KINDS if h.get(kind) is not None))


# -- linux ----------------------------------------------------------------------------------------
class Namespace(NamedTuple):
    type: str  # an osvirt.container.namespaces.KINDS name
    path: str | None = None  # join this one (setns) rather than make one

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"type": self.type, "path": self.path})


class IdMapping(NamedTuple):
    container_id: int
    host_id: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


class Memory(NamedTuple):
    limit: int | None = None  # bytes; -1: unlimited
    reservation: int | None = None
    swap: int | None = None  # memory + swap, bytes (-1: unlimited)
    swappiness: int | None = None
    disable_oom_killer: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"limit": self.limit, "reservation": self.reservation, "swap": self.swap,
                           "swappiness": self.swappiness, "disableOOMKiller": self.disable_oom_killer})


class Cpu(NamedTuple):
    shares: int | None = None  # v1 cpu.shares (2..262144); on v2 converted to a weight
    quota: int | None = None  # microseconds of CPU time per period; -1: unlimited
    period: int | None = None  # microseconds
    burst: int | None = None
    cpus: str | None = None
    mems: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"shares": self.shares, "quota": self.quota, "burst": self.burst, "period": self.period,
                           "cpus": self.cpus, "mems": self.mems})


class Pids(NamedTuple):
    limit: int  # -1 or 0: unlimited (runc reads 0 as "not set")

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit}


class DeviceRule(NamedTuple):
    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"allow": self.allow, "type": self.type, "major": self.major, "minor": self.minor,
                           "access": self.access})


class Resources(NamedTuple):
    memory: Memory | None = None
    cpu: Cpu | None = None
    pids: Pids | None = None
    devices: tuple[DeviceRule, ...] | None = None

    @property
    def limits(self) -> dict[str, Any]:
        """osvirt.container.cgroups.Cgroup's keyword arguments for these limits ({} for none)."""
        from osvirt.container import cgroups
        out: dict[str, Any] = {}
        if self.memory and self.memory.limit is not None and self.memory.limit > 0:
            out["memory_max_bytes"] = self.memory.limit
        if self.cpu:
            if self.cpu.quota is not None and self.cpu.quota > 0:
                out["cpu_quota"] = (self.cpu.quota, self.cpu.period or 100000)
            if self.cpu.shares:
                # shares -> weight, as runc/crun convert it for cgroup v2 (the inverse of weight_to_shares)
                low, high = cgroups.CPU_SHARES_RANGE
                shares = min(max(self.cpu.shares, low), high)
                out["cpu_weight"] = 1 + (shares - low) * (cgroups.CPU_WEIGHT_RANGE[1] - 1) // (high - low)
        if self.pids and self.pids.limit > 0:
            out["pids_max"] = self.pids.limit
        return out

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"devices": [d.to_dict() for d in self.devices] if self.devices is not None else None,
                           "memory": self.memory.to_dict() if self.memory else None,
                           "cpu": self.cpu.to_dict() if self.cpu else None,
                           "pids": self.pids.to_dict() if self.pids else None})


def _resources(value: object) -> Resources | None:
    if value is None:
        return None
    r = _obj(value, "linux.resources")
    memory = cpu = pids = None
    if r.get("memory") is not None:
        m = _obj(r.get("memory"), "linux.resources.memory")
        limit, reservation, swap = (_int(m.get(k), f"linux.resources.memory.{k}", -1, _I64_MAX)
                                    for k in ("limit", "reservation", "swap"))
        memory = Memory(limit, reservation, swap,
                        _int(m.get("swappiness"), "linux.resources.memory.swappiness", 0, 100),
                        None if m.get("disableOOMKiller") is None else
                        _bool(m.get("disableOOMKiller"), "linux.resources.memory.disableOOMKiller"))
        if memory.limit is not None and 0 < memory.limit < 6 << 20:
            raise SpecError("linux.resources.memory.limit", f"{memory.limit} bytes is below runc's minimum "
                            "(6 MiB): the container's own set-up would be OOM-killed")
    if r.get("cpu") is not None:
        c = _obj(r.get("cpu"), "linux.resources.cpu")
        cpu = Cpu(_int(c.get("shares"), "linux.resources.cpu.shares", 0, 2**64 - 1),
                  _int(c.get("quota"), "linux.resources.cpu.quota", -1, _I64_MAX),
                  _int(c.get("period"), "linux.resources.cpu.period", 0, 2**64 - 1),
                  _int(c.get("burst"), "linux.resources.cpu.burst", 0, 2**64 - 1),
                  _str(c.get("cpus"), "linux.resources.cpu.cpus"), _str(c.get("mems"), "linux.resources.cpu.mems"))
        from osvirt.container import cgroups
        if cpu.period and not cgroups.CPU_PERIOD_US_RANGE[0] <= cpu.period <= cgroups.CPU_PERIOD_US_RANGE[1]:
            raise SpecError("linux.resources.cpu.period", f"{cpu.period} not in "
                            f"{cgroups.CPU_PERIOD_US_RANGE[0]}..{cgroups.CPU_PERIOD_US_RANGE[1]} microseconds")
        if cpu.quota is not None and 0 < cpu.quota < cgroups.CPU_QUOTA_US_MIN:
            raise SpecError("linux.resources.cpu.quota", f"{cpu.quota} below the kernel's minimum "
                            f"({cgroups.CPU_QUOTA_US_MIN} microseconds)")
    if r.get("pids") is not None:
        p = _obj(r.get("pids"), "linux.resources.pids")
        pids = Pids(_req_int(p.get("limit"), "linux.resources.pids.limit", -1, 1 << 22))
    devices = None
    if r.get("devices") is not None:
        rules = []
        for i, d in enumerate(_list(r.get("devices"), "linux.resources.devices") or ()):
            field = f"linux.resources.devices[{i}]"
            d = _obj(d, field)
            kind = _str(d.get("type"), f"{field}.type")
            if kind not in (None, "a", "b", "c"):
                raise SpecError(f"{field}.type", f"{kind!r} is not a, b or c")
            access = _str(d.get("access"), f"{field}.access")
            if access is not None and (not access or set(access) - set("rwm")):
                raise SpecError(f"{field}.access", f"{access!r} is not made of r, w and m")
            if d.get("allow") is None:
                raise SpecError(f"{field}.allow", "is required")
            rules.append(DeviceRule(_bool(d.get("allow"), f"{field}.allow"), kind,
                                    _int(d.get("major"), f"{field}.major", -1, _U32),
                                    _int(d.get("minor"), f"{field}.minor", -1, _U32), access))
        devices = tuple(rules)
    return Resources(memory, cpu, pids, devices)


class SeccompArg(NamedTuple):
    arg: int  # OCI's "index": which argument (a tuple's own index() keeps its name)
    value: int
    op: str
    value_two: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"index": self.arg, "value": self.value, "valueTwo": self.value_two, "op": self.op})


class SyscallRule(NamedTuple):
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"names": list(self.names), "action": self.action, "errnoRet": self.errno_ret,
                           "args": [a.to_dict() for a in self.args] if self.args is not None else None})


class Seccomp(NamedTuple):
    default_action: str
    filter: _seccomp.Filter  # compiled by osvirt.container.seccomp, ready for install()
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] | None = None
    flags: tuple[str, ...] | None = None
    syscalls: tuple[SyscallRule, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({
            "defaultAction": self.default_action, "defaultErrnoRet": self.default_errno_ret,
            "architectures": list(self.architectures) if self.architectures is not None else None,
            "flags": list(self.flags) if self.flags is not None else None,
            "syscalls": [s.to_dict() for s in self.syscalls] if self.syscalls is not None else None})


def _seccomp_section(value: object) -> Seccomp | None:
    if value is None:
        return None
    s = _obj(value, "linux.seccomp")
    default_action = _req_str(s.get("defaultAction"), "linux.seccomp.defaultAction")
    architectures = _strs(s.get("architectures"), "linux.seccomp.architectures")
    flags = _strs(s.get("flags"), "linux.seccomp.flags")
    for i, flag in enumerate(flags or ()):
        if flag not in _seccomp.FLAGS:  # WAIT_KILLABLE_RECV is for SCMP_ACT_NOTIFY's listener: refused with it
            raise SpecError(f"linux.seccomp.flags[{i}]", f"{flag!r} is not one of {sorted(_seccomp.FLAGS)}")
    rules = []
    for i, rule in enumerate(_list(s.get("syscalls"), "linux.seccomp.syscalls") or ()):
        field = f"linux.seccomp.syscalls[{i}]"
        rule = _obj(rule, field)
        names = _strs(rule.get("names"), f"{field}.names", required=True)
        assert names is not None
        if not names:
            raise SpecError(f"{field}.names", "must name at least one system call")
        args = None
        if rule.get("args") is not None:
            args = []
            for j, arg in enumerate(_list(rule.get("args"), f"{field}.args") or ()):
                afield = f"{field}.args[{j}]"
                arg = _obj(arg, afield)
                args.append(SeccompArg(_req_int(arg.get("index"), f"{afield}.index", 0, 5),
                                       _req_int(arg.get("value"), f"{afield}.value", 0, 2**64 - 1),
                                       _req_str(arg.get("op"), f"{afield}.op"),
                                       _int(arg.get("valueTwo"), f"{afield}.valueTwo", 0, 2**64 - 1)))
        rules.append(SyscallRule(names, _req_str(rule.get("action"), f"{field}.action"),
                                 _int(rule.get("errnoRet"), f"{field}.errnoRet", 0, _U32), tuple(args)
                                 if args is not None else None))
    for action in [default_action] + [r.action for r in rules]:
        if action in ("SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE"):
            raise SpecError("linux.seccomp", f"{action} hands calls to a listener or a tracer, which osvirt "
                            "does not provide (actions: " + ", ".join(sorted(_seccomp.ACTIONS)) + ")")
    try:
        compiled = _seccomp.compile_filter(s)
    except (ValueError, TypeError) as e:
        raise SpecError("linux.seccomp", str(e).removeprefix("seccomp: ")) from None
    return Seccomp(default_action, compiled, _int(s.get("defaultErrnoRet"), "linux.seccomp.defaultErrnoRet", 0, _U32),
                   architectures, flags, tuple(rules) if s.get("syscalls") is not None else None)


class Linux(NamedTuple):
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] | None = None
    gid_mappings: tuple[IdMapping, ...] | None = None
    resources: Resources | None = None
    cgroups_path: str | None = None
    seccomp: Seccomp | None = None
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    sysctl: dict[str, str] | None = None
    rootfs_propagation: str | None = None
    given_namespaces: bool = True  # whether the config listed them (for to_dict)

    def namespace(self, kind: str) -> Namespace | None:
        """The entry of `kind`, or None when the container shares the runtime's."""
        return next((ns for ns in self.namespaces if ns.type == kind), None)

    def new(self, kind: str) -> bool:
        """Whether a namespace of `kind` is made for the container (listed, without a path)."""
        ns = self.namespace(kind)
        return ns is not None and ns.path is None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({
            "namespaces": [ns.to_dict() for ns in self.namespaces] if self.given_namespaces else None,
            "uidMappings": [m.to_dict() for m in self.uid_mappings] if self.uid_mappings is not None else None,
            "gidMappings": [m.to_dict() for m in self.gid_mappings] if self.gid_mappings is not None else None,
            "maskedPaths": list(self.masked_paths) if self.masked_paths is not None else None,
            "readonlyPaths": list(self.readonly_paths) if self.readonly_paths is not None else None,
            "seccomp": self.seccomp.to_dict() if self.seccomp else None,
            "resources": self.resources.to_dict() if self.resources else None,
            "cgroupsPath": self.cgroups_path, "sysctl": self.sysctl, "rootfsPropagation": self.rootfs_propagation})


def _mappings(value: object, field: str) -> tuple[IdMapping, ...] | None:
    items = _list(value, field)
    if items is None:
        return None
    found = []
    for i, m in enumerate(items):
        f = f"{field}[{i}]"
        m = _obj(m, f)
        found.append(IdMapping(_req_int(m.get("containerID"), f"{f}.containerID", 0, _U32 - 1),
                               _req_int(m.get("hostID"), f"{f}.hostID", 0, _U32 - 1),
                               _req_int(m.get("size"), f"{f}.size", 1, _U32)))
    try:
        _namespaces._check_map([(m.container_id, m.host_id, m.size) for m in found], field)
    except (ValueError, TypeError) as e:
        raise SpecError(field, str(e).removeprefix("write_id_maps: ")) from None
    return tuple(found)


# sysctl prefixes and the namespace that makes them the container's own (runc's validator).
_SYSCTL_NAMESPACES = {"kernel.msg": "ipc", "kernel.sem": "ipc", "kernel.shm": "ipc", "fs.mqueue.": "ipc",
                      "net.": "network", "kernel.hostname": "uts", "kernel.domainname": "uts"}


def _linux(value: object) -> Linux | None:
    if value is None:
        return None
    lx = _obj(value, "linux")
    namespaces: list[Namespace] = []
    for i, ns in enumerate(_list(lx.get("namespaces"), "linux.namespaces") or ()):
        field = f"linux.namespaces[{i}]"
        ns = _obj(ns, field)
        kind = _req_str(ns.get("type"), f"{field}.type")
        if kind not in _namespaces.KINDS:
            raise SpecError(f"{field}.type", f"{kind!r} is not a namespace type ({', '.join(sorted(_namespaces.KINDS))})")
        if any(n.type == kind for n in namespaces):
            raise SpecError(f"{field}.type", f"{kind} given twice")
        path = _str(ns.get("path"), f"{field}.path")
        if path is not None and not os.path.isabs(path):
            raise SpecError(f"{field}.path", f"{path!r} must be an absolute path")
        namespaces.append(Namespace(kind, path or None))
    sysctl = _str_map(lx.get("sysctl"), "linux.sysctl")
    for key in sysctl or {}:
        owner = next((k for prefix, k in _SYSCTL_NAMESPACES.items() if key.startswith(prefix)), None)
        if owner is None:
            raise SpecError(f"linux.sysctl.{key}", "not a namespaced sysctl: setting it would change the host's")
        if not any(n.type == owner and n.path is None for n in namespaces):
            raise SpecError(f"linux.sysctl.{key}", f"needs a {owner} namespace of the container's own")
    propagation = _str(lx.get("rootfsPropagation"), "linux.rootfsPropagation")
    if propagation is not None and propagation not in PROPAGATION:
        raise SpecError("linux.rootfsPropagation", f"{propagation!r} is not one of {sorted(PROPAGATION)}")
    masked = _strs(lx.get("maskedPaths"), "linux.maskedPaths")
    readonly = _strs(lx.get("readonlyPaths"), "linux.readonlyPaths")
    for name, paths in (("maskedPaths", masked), ("readonlyPaths", readonly)):
        for i, path in enumerate(paths or ()):
            if not os.path.isabs(path):
                raise SpecError(f"linux.{name}[{i}]", f"{path!r} must be an absolute path")
    cgroups_path = _str(lx.get("cgroupsPath"), "linux.cgroupsPath")
    if cgroups_path is not None and (".." in cgroups_path.split("/") or ":" in cgroups_path):
        raise SpecError("linux.cgroupsPath", f"{cgroups_path!r}: a path of directories without '..' "
                        "(systemd's slice:prefix:name form is not supported)")
    return Linux(tuple(namespaces), _mappings(lx.get("uidMappings"), "linux.uidMappings"),
                 _mappings(lx.get("gidMappings"), "linux.gidMappings"), _resources(lx.get("resources")),
                 cgroups_path or None, _seccomp_section(lx.get("seccomp")), masked, readonly, sysctl, propagation,
                 lx.get("namespaces") is not None)


# -- the whole spec --------------------------------------------------------------------------------
class Spec(NamedTuple):
    """A checked config.json (see the module's docstring)."""
    oci_version: str
    root: Root
    bundle: str  # absolute
    process: Process | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] | None = None
    hooks: Hooks | None = None
    annotations: dict[str, str] | None = None
    linux: Linux = Linux(given_namespaces=False)
    linux_given: bool = False
    raw: Mapping[str, Any] = MappingProxyType({})  # the config as given, unknown fields and all

    def hooks_of(self, kind: str) -> tuple[Hook, ...]:
        return self.hooks.of(kind) if self.hooks else ()

    def to_dict(self) -> dict[str, Any]:
        """The config.json of what was understood (unknown fields left out)."""
        return _drop_none({
            "ociVersion": self.oci_version,
            "process": self.process.to_dict() if self.process else None,
            "root": self.root.to_dict(), "hostname": self.hostname, "domainname": self.domainname,
            "mounts": [m.to_dict() for m in self.mounts] if self.mounts is not None else None,
            "hooks": self.hooks.to_dict() if self.hooks else None, "annotations": self.annotations,
            "linux": self.linux.to_dict() if self.linux_given else None})


_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


def parse(config: Mapping[str, Any], bundle: str | os.PathLike[str] = ".") -> Spec:
    """A checked Spec from a config.json's dict; relative paths (root.path, a bind's source) join `bundle`.

    SpecError, naming the field, for anything the runtime-spec forbids or
    osvirt cannot do as asked.
    """
    if not isinstance(config, Mapping):
        raise SpecError("(top level)", f"must be an object, not {type(config).__name__}")
    bundle_dir = os.path.abspath(os.fspath(bundle))
    version = _req_str(config.get("ociVersion"), "ociVersion")
    match = _SEMVER.fullmatch(version)
    if not match:
        raise SpecError("ociVersion", f"{version!r} is not a SemVer version")
    if match.group(1) != "1":
        raise SpecError("ociVersion", f"{version}: osvirt reads runtime-spec 1.x")
    root_obj = _obj(config.get("root"), "root", required=True)
    root_path = _req_str(root_obj.get("path"), "root.path")
    if not root_path:
        raise SpecError("root.path", "must not be empty")
    root = Root(root_path, None if root_obj.get("readonly") is None else _bool(root_obj.get("readonly"),
                                                                              "root.readonly"),
                os.path.normpath(os.path.join(bundle_dir, root_path)))
    linux = _linux(config.get("linux"))
    hostname = _str(config.get("hostname"), "hostname")
    domainname = _str(config.get("domainname"), "domainname")
    for field, name in (("hostname", hostname), ("domainname", domainname)):
        if name:
            if len(name.encode()) > 64:
                raise SpecError(field, f"{name!r} is longer than 64 bytes")
            if linux is None or linux.namespace("uts") is None:
                raise SpecError(field, "setting it needs a UTS namespace (linux.namespaces) of the container's own")
    if linux is not None:
        user = linux.new("user")
        if (linux.uid_mappings or linux.gid_mappings) and linux.namespace("user") is None:
            raise SpecError("linux.uidMappings", "mappings need a user namespace in linux.namespaces")
        if user and not (linux.uid_mappings and linux.gid_mappings):
            raise SpecError("linux.uidMappings" if not linux.uid_mappings else "linux.gidMappings",
                            "a new user namespace needs both uidMappings and gidMappings")
    annotations = _str_map(config.get("annotations"), "annotations")
    return Spec(version, root, bundle_dir, _process(config.get("process")), hostname, domainname,
                _mounts(config.get("mounts"), bundle_dir), _hooks(config.get("hooks")), annotations,
                linux if linux is not None else Linux(given_namespaces=False), linux is not None, dict(config))


def load(bundle: str | os.PathLike[str]) -> Spec:
    """Read and check `bundle`/config.json (or `bundle` itself when it names a file)."""
    path = os.fspath(bundle)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path, "rb") as f:
        try:
            config = json.load(f)
        except ValueError as e:
            raise SpecError("(file)", f"{path} is not JSON: {e}") from None
    return parse(config, os.path.dirname(os.path.abspath(path)))


def state(id: str, status: str, pid: int | None, bundle: str, annotations: Mapping[str, str] | None = None,
          oci_version: str = "1.0.2") -> dict[str, Any]:
    """The state JSON (runtime.md's "State"): what `state` prints and a hook reads on stdin.

    `pid` is left out once the container is stopped, as the spec asks.
    """
    if status not in STATUSES:
        raise ValueError(f"state: status {status!r} not one of {STATUSES}")
    out: dict[str, Any] = {"ociVersion": oci_version, "id": id, "status": status}
    if pid is not None and status in ("created", "running"):
        out["pid"] = pid
    out["bundle"] = bundle
    out["annotations"] = dict(annotations or {})
    return out


def run_hook(hook: Hook, state_json: Mapping[str, Any], kind: str = "hook") -> None:
    """Run one hook as the spec says: `path` with `args` (args[0] is argv[0]) and exactly `env`,
    the state JSON on its stdin; killed after `timeout` seconds.

    A hook that cannot start, fails or times out raises
    osvirt.errors.ContainerError naming it (the runtime decides whether
    that stops the container: createRuntime's does, poststop's only warns).
    """
    import subprocess

    from osvirt.errors import ContainerError
    from osvirt.process import Children
    argv = list(hook.args) if hook.args else [hook.path]
    env = dict(entry.split("=", 1) for entry in hook.env or ())
    what = f"{kind} hook {hook.path}"
    with Children() as kids:
        try:
            proc = kids.spawn(argv, executable=hook.path, env=env, stdin=subprocess.PIPE, close_fds=True)
        except OSError as e:
            raise ContainerError(what, e.errno, e.strerror or str(e)) from None
        try:
            proc.communicate(json.dumps(state_json).encode(), timeout=hook.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ContainerError(what, None, f"timed out after {hook.timeout} s (killed)") from None
    if proc.returncode != 0:
        raise ContainerError(what, None, f"exited with status {proc.returncode}")
