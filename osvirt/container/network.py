"""Network: a container's own network namespace, loopback only, or a veth pair to the host.

    from osvirt.container import network
    network.loopback_up()               # in the child, inside its new netns: lo UP, 127.0.0.1 works
    network.interfaces()                # [Interface(name='lo', index=1, up=True, ...)]: only lo
    # in the parent, holding the child's pid (CAP_NET_ADMIN and CAP_SYS_ADMIN: root):
    network.loopback_up(pid)            # the same from outside, through /proc/PID/ns/net
    with network.Veth(pid) as veth:     # host end osv<pid>-<hex> here, eth0 in pid's netns, both UP
        veth.host_address, veth.guest_address   # IPv4Interface('169.254.37.1/30'), ...37.2/30
        veth.round_trip(3)              # UDP datagrams guest -> host -> guest, and the counters' rise
    # closed: the host end deleted (its peer with it); owner SIGKILLed: osvirt.tracker deletes it

A new network namespace holds one interface, `lo`, and it is DOWN: nothing,
not even 127.0.0.1, answers until it is brought up. `loopback_up(target)`
does that (the kernel then gives lo 127.0.0.1/8 and ::1). `target` is, here
and in `interfaces` and `Veth`: 0 (this process's netns), a pid (its
/proc/PID/ns/net), or a netns file's path (/run/netns/NAME, or
/proc/self/fd/N for an open namespace descriptor).

`Veth(target)` links the container to the host and to nothing else: a pair
whose host end stays here and whose peer is made directly in the target's
netns (named `eth0` there: no clash with the host's own), addresses from a
/30 of 169.254.0.0/16 (link-local: never routed off a link) that no
address or route of the host overlaps (a private /30 only if none is free),
no default route, no NAT, no forwarding. The parent configures both ends:
the guest end through a netlink socket made in the target's netns (a thread
enters it with setns, makes the socket, and ends; the socket stays there),
so nothing needs to run inside the container but `loopback_up()`.

Why lo is brought up with an ioctl (SIOCSIFFLAGS on any socket of the
namespace, csrc/network.c) and not netlink: it is two system calls in the
container's start path, where importing pyroute2 would cost many times a
whole runc start. Everything else is netlink through pyroute2, imported on
first use.

Privileges: a new netns needs CAP_SYS_ADMIN, or a user namespace of one's
own (rootless): there lo can be brought up (CAP_NET_ADMIN over the netns is
the owner's), but a veth to the host needs CAP_NET_ADMIN over the host's
netns, which a rootless user lacks. `osvirt.env.can("network_namespace")`
and `can("veth")` say which applies here.
"""
import contextlib
import errno
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from osvirt import tracker
from osvirt._owned import Owned
from osvirt.container import _native, namespaces
from osvirt.errors import kernel_error
from osvirt.process.spawn import signals_deferred

if TYPE_CHECKING:  # both imported where used, for what they cost to import
    from ipaddress import IPv4Interface, IPv4Network

    from pyroute2 import IPRoute

__all__ = ["IFNAMSIZ", "PREFIX", "Target", "Interface", "RoundTrip", "Veth", "loopback_up", "interfaces", "check_name",
           "check_osvirt_name", "host_networks", "delete_veth"]

# Where: 0 (this process's netns), a pid (/proc/PID/ns/net), or a netns file's path.
Target = int | str | os.PathLike[str]

IFNAMSIZ = _native.IFNAMSIZ  # an interface name is at most IFNAMSIZ - 1 bytes and a NUL
PREFIX = "osv"  # osvirt's interfaces: osv<pid>-<hex>, IFNAMSIZ - 1 characters (the pid says who made it)
_OSVIRT_NAME = re.compile(PREFIX + r"([0-9]+)-[0-9a-f]{4,}")

# Addresses of this machine only: link-local first (RFC 3927: its first and last /24 reserved,
# and 169.254.169.254 is clouds' metadata service), the private ranges (RFC 1918) if none is free.
_LINK_LOCAL = "169.254.0.0/16"
_PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_AVOID = ("169.254.0.0/24", "169.254.255.0/24", "169.254.169.252/30")
_TRIES = 256


class Interface(NamedTuple):
    """A network interface as the kernel reports it (netlink RTM_GETLINK and RTM_GETADDR).

    `up`: administratively up (IFF_UP); `carrier`: the link is up too
    (IFF_LOWER_UP; a veth has it once both ends are up). `kind`: the driver
    netlink names ("veth"; None for lo and physical devices). The counters
    are the kernel's own (IFLA_STATS64), packets and bytes since creation.
    """
    name: str
    index: int  # type: ignore[assignment]  # the kernel's ifindex; shadows tuple.index on purpose
    up: bool
    carrier: bool
    kind: str | None
    addresses: tuple[str, ...]  # "address/prefix", IPv4 and IPv6
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int


class RoundTrip(NamedTuple):
    """What `Veth.round_trip` measured: `echoes` UDP echoes, guest end to host end and back.

    `sent` counts the datagrams the guest sent (a lost one is sent again);
    the counters are each end's rise over the exchange, read from the kernel
    (ARP and, when IPv6 is on, neighbour discovery add to them).
    """
    echoes: int
    sent: int
    median_s: float
    host_rx_packets: int
    host_tx_packets: int
    guest_rx_packets: int
    guest_tx_packets: int


# -- names ---------------------------------------------------------------------------------
def check_name(facility: str, name: str) -> None:
    """ValueError unless `name` is one the kernel takes for an interface (dev_valid_name)."""
    if not isinstance(name, str):
        raise TypeError(f"{facility}: an interface name must be a str, not {type(name).__name__}")
    size = len(name.encode())
    if not 0 < size < IFNAMSIZ:
        raise ValueError(f"{facility}: interface name {name!r} is {size} bytes; the kernel takes 1 to "
                         f"{IFNAMSIZ - 1} (IFNAMSIZ)")
    if name in (".", "..") or any(c == "/" or c == ":" or c.isspace() or c == "\0" for c in name):
        raise ValueError(f"{facility}: interface name {name!r}: no '/', ':', white space, '.' or '..'")


def check_osvirt_name(facility: str, name: str) -> None:
    """ValueError unless `name` is an interface name osvirt makes (`osv<pid>-<hex>`), as the tracker asks."""
    check_name(facility, name)
    if not _OSVIRT_NAME.fullmatch(name):
        raise ValueError(f"{facility}: {name!r} is not an osvirt interface name ({PREFIX}<pid>-<hex>)")


def _unique_name() -> str:
    """`osv<pid>-<hex>`: the maker's pid, then random hex digits (4 at least) up to IFNAMSIZ - 1 characters."""
    head = f"{PREFIX}{os.getpid()}-"
    return head + os.urandom(8).hex()[:max(4, IFNAMSIZ - 1 - len(head))]


# -- where: the target's network namespace ------------------------------------------------------
def _netns_path(facility: str, target: Target) -> str | None:
    """The netns file of `target` (checked before any system call), or None for this process's own."""
    if isinstance(target, bool) or not isinstance(target, (int, str, os.PathLike)):
        raise TypeError(f"{facility}: target must be a pid or a network namespace file, not {type(target).__name__}")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"{facility}: pid {target} is negative")
        return None if target == 0 else f"/proc/{target}/ns/net"
    path = os.fspath(target)
    if not path:
        raise ValueError(f"{facility}: the network namespace file's path is empty")
    return path


def _open_netns(facility: str, path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        assert e.errno is not None
        hint = "no such process" if path.startswith("/proc/") and e.errno == errno.ENOENT else None
        raise kernel_error(e.errno, f"{facility}: open({path})", hint, path) from None


def _is_own_netns(fd: int) -> bool:
    mine, theirs = os.stat("/proc/self/ns/net"), os.fstat(fd)
    return (mine.st_ino, mine.st_dev) == (theirs.st_ino, theirs.st_dev)


def _socket_in(netns_fd: int | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket in the network namespace `netns_fd` (None: this thread's own).

    A socket belongs to the namespace it was made in for life. A thread
    enters the target (setns moves only the calling thread for CLONE_NEWNET),
    makes the socket, and ends: this process's own threads never move.
    """
    if netns_fd is None:
        return socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            namespaces.setns(netns_fd, "network")
            made.append(socket.socket(family, kind | socket.SOCK_CLOEXEC, proto))
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=enter_and_make, name="osvirt-netns")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


@contextlib.contextmanager
def _in_netns(facility: str, target: Target) -> Iterator[int | None]:
    """The target's netns as an open descriptor (None: this process's own), closed after."""
    path = _netns_path(facility, target)
    if path is None:
        yield None
        return
    fd = _open_netns(facility, path)
    try:
        yield fd
    finally:
        os.close(fd)


# -- netlink through pyroute2 -----------------------------------------------------------------
_HINTS = {
    errno.EPERM: "needs CAP_NET_ADMIN over the network namespace",
    errno.EOPNOTSUPP: "the kernel has no veth driver (CONFIG_VETH)",
}


@contextlib.contextmanager
def _netlink(facility: str, hints: dict[int, str] | None = None) -> Iterator[None]:
    """pyroute2's NetlinkError as osvirt's OSError for its errno, naming `facility`."""
    from pyroute2 import NetlinkError
    try:
        yield
    except NetlinkError as e:
        code = e.code if isinstance(e.code, int) and e.code > 0 else errno.EIO
        raise kernel_error(code, facility, {**_HINTS, **(hints or {})}.get(code)) from None


def _iproute(netns_fd: int | None = None) -> "IPRoute":
    """A pyroute2 IPRoute (an rtnetlink socket) in the netns `netns_fd` (None: this thread's)."""
    from pyroute2 import IPRoute
    if netns_fd is None:
        return IPRoute()
    sock = _socket_in(netns_fd, socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    try:
        return IPRoute(fileno=sock.fileno())  # pyroute2 wraps the same descriptor and closes it
    except BaseException:
        sock.close()
        raise
    finally:
        sock.detach()


def _interfaces(ipr: "IPRoute") -> list[Interface]:
    addresses: dict[int, list[str]] = {}
    for msg in ipr.get_addr():
        addresses.setdefault(int(msg["index"]), []).append(f"{msg.get('IFA_ADDRESS')}/{int(msg['prefixlen'])}")
    found = []
    for msg in ipr.get_links():
        flags = int(msg["flags"])
        stats = msg.get("IFLA_STATS64") or {}
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        found.append(Interface(
            name=str(msg.get("IFLA_IFNAME")), index=int(msg["index"]), up=bool(flags & _native.IFF["UP"]),
            carrier=bool(flags & _native.IFF["LOWER_UP"]), kind=None if kind is None else str(kind),
            addresses=tuple(addresses.get(int(msg["index"]), ())),
            rx_packets=int(stats.get("rx_packets", 0)), tx_packets=int(stats.get("tx_packets", 0)),
            rx_bytes=int(stats.get("rx_bytes", 0)), tx_bytes=int(stats.get("tx_bytes", 0))))
    return sorted(found, key=lambda interface: interface.index)


def interfaces(target: Target = 0) -> list[Interface]:
    """The interfaces of `target`'s network namespace (0: this process's), by index, from the kernel.

    For another namespace this enters it in a thread (setns: CAP_SYS_ADMIN
    over it); a rootless parent, which cannot, asks inside the container.
    """
    with _in_netns("interfaces", target) as fd, _netlink("interfaces: netlink RTM_GETLINK"):
        with _iproute(fd) as ipr:
            return _interfaces(ipr)


def loopback_up(target: Target = 0) -> None:
    """Bring `lo` up in `target`'s network namespace (0: this process's own); the kernel gives it
    127.0.0.1/8 and ::1. An ioctl on a socket of that namespace (SIOCGIFFLAGS, then SIOCSIFFLAGS
    with IFF_UP): CAP_NET_ADMIN over it."""
    with _in_netns("loopback_up", target) as fd:
        with _socket_in(fd, socket.AF_INET, socket.SOCK_DGRAM) as sock:
            flags = _native.ifflags_get(sock.fileno(), "lo", "loopback_up: ioctl(SIOCGIFFLAGS, lo)")
            if not flags & _native.IFF["UP"]:
                _native.ifflags_set(sock.fileno(), "lo", flags | _native.IFF["UP"],
                                    "loopback_up: ioctl(SIOCSIFFLAGS, lo, IFF_UP)")


# -- addresses -----------------------------------------------------------------------------
def host_networks() -> "list[IPv4Network]":
    """The IPv4 networks this process's netns uses: each address's network and each route's
    destination in every table (the default route, 0.0.0.0/0, left out: it overlaps everything)."""
    import ipaddress
    with _netlink("netlink RTM_GETADDR, RTM_GETROUTE"), _iproute() as ipr:
        used = {address.network for _, address in _ipv4_addresses(ipr)}
        for msg in ipr.get_routes(family=socket.AF_INET):
            if int(msg["dst_len"]) > 0:
                used.add(ipaddress.IPv4Network(f"{msg.get('RTA_DST')}/{int(msg['dst_len'])}", strict=False))
    return sorted(used)


def _ipv4_addresses(ipr: "IPRoute") -> "list[tuple[int, IPv4Interface]]":
    """(link index, address/prefix) of every IPv4 address in `ipr`'s netns."""
    import ipaddress
    return [(int(msg["index"]), ipaddress.IPv4Interface(f"{msg.get('IFA_ADDRESS')}/{int(msg['prefixlen'])}"))
            for msg in ipr.get_addr(family=socket.AF_INET)]


def _free_network(used: "list[IPv4Network]") -> "IPv4Network":
    """A random /30 of 169.254.0.0/16 that overlaps none of `used` (nor the reserved), else a private one."""
    import ipaddress
    import secrets
    avoid = [*used, *map(ipaddress.IPv4Network, _AVOID)]
    for pool in [ipaddress.IPv4Network(_LINK_LOCAL)], list(map(ipaddress.IPv4Network, _PRIVATE)):
        for _ in range(_TRIES):
            space = pool[secrets.randbelow(len(pool))]
            start = int(space.network_address) + 4 * secrets.randbelow(space.num_addresses // 4)
            candidate = ipaddress.IPv4Network((start, 30))
            if not any(candidate.overlaps(other) for other in avoid):
                return candidate
    raise kernel_error(errno.EADDRNOTAVAIL, "Veth: no free /30 in 169.254.0.0/16 nor the private ranges",
                       "the host's addresses and routes overlap every one tried")


def _pair(host_addr: "str | IPv4Interface | None",
          guest_addr: "str | IPv4Interface | None") -> "tuple[IPv4Interface, IPv4Interface] | None":
    """The two addresses, checked (ValueError): one network, link-local or private; None: choose."""
    import ipaddress
    spaces = [ipaddress.IPv4Network(_LINK_LOCAL), *map(ipaddress.IPv4Network, _PRIVATE)]
    given = []
    for what, value in (("host_addr", host_addr), ("guest_addr", guest_addr)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, ipaddress.IPv4Interface)):
            raise TypeError(f"Veth: {what} must be an IPv4 address/prefix str, not {type(value).__name__}")
        try:
            address = ipaddress.IPv4Interface(value)
        except ValueError as e:
            raise ValueError(f"Veth: {what} {value!r} is not an IPv4 address/prefix: {e}") from None
        net = address.network
        if not 8 <= net.prefixlen <= 30:
            raise ValueError(f"Veth: {what} {value!r}: the prefix must be /8 to /30 (two hosts at least)")
        if address.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"Veth: {what} {value!r} is its network's network or broadcast address")
        if not any(net.subnet_of(space) for space in spaces):
            raise ValueError(f"Veth: {what} {value!r} is not link-local (169.254.0.0/16) nor private "
                             "(10/8, 172.16/12, 192.168/16): a veth gets addresses of this machine only")
        given.append((what, address))
    if not given:
        return None
    if len(given) == 1:  # the other: the other host of the /30, or the next address
        (what, address), = given
        hosts = list(address.network.hosts()) if address.network.prefixlen == 30 else None
        other = hosts[hosts.index(address.ip) - 1] if hosts else address.ip + 1
        if other == address.network.broadcast_address:
            other = address.ip - 1
        pair = (address, ipaddress.IPv4Interface((other, address.network.prefixlen)))
        return pair if what == "host_addr" else pair[::-1]
    (_, host), (_, guest) = given
    if host.network != guest.network:
        raise ValueError(f"Veth: host_addr {host} and guest_addr {guest} are not in one network")
    if host.ip == guest.ip:
        raise ValueError(f"Veth: host_addr and guest_addr are the same address {host.ip}")
    return host, guest


# -- the veth pair ------------------------------------------------------------------------
def delete_veth(name: str) -> bool:
    """Delete osvirt's veth `name` in this netns (its peer goes with it): True if deleted, False if
    there was none. ValueError if `name` is not osvirt's or not a veth. The tracker's remover."""
    check_osvirt_name("delete_veth", name)
    with _netlink(f"delete_veth({name}): netlink RTM_DELLINK"), _iproute() as ipr:
        found = ipr.get_links(ifname=name) if ipr.link_lookup(ifname=name) else []
        if not found:
            return False
        kind = found[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind != "veth":
            raise ValueError(f"delete_veth: {name} is a {kind or 'device'} link, not a veth: not removed")
        try:
            ipr.link("del", index=int(found[0]["index"]))
        except Exception as e:  # gone meanwhile: its namespace peer's netns died and took it
            if getattr(e, "code", None) == errno.ENODEV:
                return False
            raise
    return True


def _try_veth() -> None:
    """Make a veth pair with both ends in this thread's netns (osvirt.env's probe, run inside a new
    one it then drops): whether this kernel has the driver, and netlink lets us use it."""
    with _netlink("netlink RTM_NEWLINK(veth)"), _iproute() as ipr:
        ipr.link("add", ifname=f"{PREFIX}probe0", kind="veth", peer={"ifname": f"{PREFIX}probe1"})


class Veth(Owned):
    """A veth pair from this process's netns to `target`'s (a pid, or a netns file), both ends up.

    The host end is `host_name` (`osv<pid>-<hex>`) here; its peer is made in
    the target's netns as `guest_name`. Both get an address of one /30:
    `host_address`, `guest_address` (IPv4Interface), chosen free on the host
    (link-local) unless given (link-local or private only). With `check`,
    one UDP round trip from the guest end to the host end proves the link
    before the constructor returns (TimeoutError if nothing comes back).

    The host end is registered with osvirt.tracker before it exists; close()
    (and `with`, and an exception in the constructor) deletes it, which
    deletes the peer too; the kernel deletes both when the target's netns
    goes away (this object holds no descriptor of it, which would keep it:
    it reopens the netns file when it needs it, and checks that it is the
    same namespace). Bad names and addresses raise ValueError before any
    system call. Needs CAP_NET_ADMIN here, and CAP_SYS_ADMIN over the
    target's netns to configure its end from here.
    """

    host_name = ""
    guest_name = ""
    host_address: "IPv4Interface | None" = None
    guest_address: "IPv4Interface | None" = None
    _made = False  # the class default: nothing held (the host end exists while this is True)
    _netns_path = ""
    _netns_id = (0, 0)  # the target netns's inode and device, as opened first

    def __init__(self, target: Target, host_addr: "str | IPv4Interface | None" = None,
                 guest_addr: "str | IPv4Interface | None" = None, *, guest_name: str = "eth0",
                 check: bool = True) -> None:
        path = _netns_path("Veth", target)
        if path is None:
            raise ValueError("Veth: target 0 is this process's own network namespace: give the container's pid")
        check_name("Veth", guest_name)
        pair = _pair(host_addr, guest_addr)
        # Checked; from here on, system calls.
        fd = _open_netns("Veth", path)
        self._creator = os.getpid()
        try:
            st = os.fstat(fd)
            self._netns_path, self._netns_id = path, (st.st_ino, st.st_dev)
            if _is_own_netns(fd):
                raise ValueError(f"Veth: {path} is this process's own network namespace: a veth to the host "
                                 "needs the container in one of its own")
            import ipaddress
            used = host_networks()
            if pair is None:
                network = _free_network(used)
                pair = (ipaddress.IPv4Interface((network[1], 30)), ipaddress.IPv4Interface((network[2], 30)))
            else:
                clash = [str(other) for other in used if pair[0].network.overlaps(other)]
                if clash:
                    raise kernel_error(errno.EADDRINUSE, f"Veth: {pair[0].network}",
                                       f"overlaps the host's {', '.join(clash)}")
            self.host_address, self.guest_address = pair
            self.guest_name = guest_name
            self._create(fd)
            self._configure(fd)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)
        if check:
            try:
                self.round_trip(1)
            except BaseException:
                self.close()
                raise

    @contextlib.contextmanager
    def _target(self) -> Iterator[int]:
        """The target's netns, opened again: the same namespace, or ESRCH (gone, its pid reused)."""
        fd = _open_netns("Veth", self._netns_path)
        try:
            st = os.fstat(fd)
            if (st.st_ino, st.st_dev) != self._netns_id:
                raise kernel_error(errno.ESRCH, f"Veth: {self._netns_path}",
                                   "not the network namespace the pair was made in: that one is gone")
            yield fd
        finally:
            os.close(fd)

    def _create(self, netns_fd: int) -> None:
        name = _unique_name()
        tracker.register("veth", name)  # before it exists: no moment in which a SIGKILL leaves it untracked
        with signals_deferred():  # made and recorded, or neither: a Ctrl-C waits until both are done
            try:
                with _netlink(f"Veth: netlink RTM_NEWLINK(veth {name}, peer {self.guest_name} in the target's netns)",
                              {errno.EEXIST: f"{name} here or {self.guest_name} in the target's netns exists"}), \
                        _iproute() as ipr:
                    ipr.link("add", ifname=name, kind="veth",
                             peer={"ifname": self.guest_name, "net_ns_fd": netns_fd})
            except BaseException:
                tracker.unregister("veth", name)
                raise
            self.host_name, self._made = name, True

    def _configure(self, netns_fd: int) -> None:
        """Address and up: the host end here, the guest end through a socket in the target's netns."""
        assert self.host_address is not None and self.guest_address is not None
        for fd, name, address, where in ((None, self.host_name, self.host_address, "here"),
                                         (netns_fd, self.guest_name, self.guest_address, "in the target")):
            with _netlink(f"Veth: netlink RTM_NEWADDR({address} on {name} {where}), RTM_NEWLINK(up)"), \
                    _iproute(fd) as ipr:
                index = ipr.link_lookup(ifname=name)[0]
                ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
                if fd is None:  # another process may have chosen the same /30 since host_networks() was read
                    _sole_holder(ipr, index, address)
                ipr.link("set", index=index, state="up")

    def round_trip(self, echoes: int = 1, timeout_s: float = 2.0) -> RoundTrip:
        """`echoes` UDP echoes from the guest end (a socket made in the target's netns, bound to
        `guest_address`) to the host end and back, each a real packet through the pair; the
        interfaces' rx/tx counters read from the kernel before and after. A datagram not answered
        in 0.1 s is sent again (the first may wait for ARP); TimeoutError after `timeout_s`."""
        if type(echoes) is not int or echoes < 1:
            raise ValueError(f"Veth.round_trip: echoes must be a positive int, not {echoes!r}")
        if not self._made or self.host_address is None or self.guest_address is None:
            raise ValueError("Veth.round_trip: closed")
        host_ip, guest_ip = str(self.host_address.ip), str(self.guest_address.ip)
        with contextlib.ExitStack() as held:
            with self._target() as netns_fd:
                guest_ipr = held.enter_context(_iproute(netns_fd))
                guest = held.enter_context(_socket_in(netns_fd, socket.AF_INET, socket.SOCK_DGRAM))
            host_ipr = held.enter_context(_iproute())
            host = held.enter_context(_socket_in(None, socket.AF_INET, socket.SOCK_DGRAM))
            host.bind((host_ip, 0))
            guest.bind((guest_ip, 0))
            before = _counters(host_ipr, self.host_name) + _counters(guest_ipr, self.guest_name)
            seconds, sent = [], 0
            deadline = time.monotonic() + timeout_s
            for _ in range(echoes):
                token = os.urandom(16)
                start = time.monotonic()
                while True:
                    if time.monotonic() > deadline:
                        raise kernel_error(errno.ETIMEDOUT, f"Veth.round_trip: {guest_ip} -> {host_ip} over "
                                           f"{self.host_name}", f"no echo in {timeout_s} s")
                    guest.sendto(token, host.getsockname())
                    sent += 1
                    if _echo(host, guest, token, min(0.1, max(0.0, deadline - time.monotonic()))):
                        break
                seconds.append(time.monotonic() - start)
            after = _counters(host_ipr, self.host_name) + _counters(guest_ipr, self.guest_name)
        seconds.sort()
        median = (seconds[(echoes - 1) // 2] + seconds[echoes // 2]) / 2
        return RoundTrip(echoes, sent, median, *(b - a for a, b in zip(before, after)))

    def close(self) -> None:
        """Delete the host end (the peer goes with it); idempotent. Only in the process that made it:
        a forked child's copy leaves it alone."""
        if self._made and self._is_creator:
            with signals_deferred():
                self._made = False
                delete_veth(self.host_name)  # raises: still registered, so the tracker tries at exit
                tracker.unregister("veth", self.host_name)


def _sole_holder(ipr: "IPRoute", index: int, address: "IPv4Interface") -> None:
    """EADDRINUSE unless link `index` alone has an address in `address`'s network."""
    for holder, other in _ipv4_addresses(ipr):
        if holder != index and other.network.overlaps(address.network):
            raise kernel_error(errno.EADDRINUSE, f"Veth: {address.network}", f"interface {holder} took {other} meanwhile")


def _counters(ipr: "IPRoute", name: str) -> tuple[int, int]:
    """Interface `name`'s (rx_packets, tx_packets), from the kernel (RTM_GETLINK of that link alone)."""
    with _netlink(f"Veth: netlink RTM_GETLINK({name})"):
        found = ipr.get_links(ifname=name)
    if not found:
        raise kernel_error(errno.ENODEV, f"Veth: {name}", "gone: the container's network namespace went away")
    stats = found[0].get("IFLA_STATS64")
    return int(stats["rx_packets"]), int(stats["tx_packets"])


def _echo(host: socket.socket, guest: socket.socket, token: bytes, wait_s: float) -> bool:
    """Whether `token` came to `host` from `guest` and back within `wait_s` (strays are dropped)."""
    import select
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        ready = select.select([host, guest], [], [], max(0.0, left))[0]
        if not ready:
            return False
        if host in ready:
            data, source = host.recvfrom(64)
            if source == guest.getsockname():
                host.sendto(data, source)
        if guest in ready:
            data, source = guest.recvfrom(64)
            if data == token and source == host.getsockname():
                return True
