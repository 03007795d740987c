"""osvirt.container.network: what a child in a new network namespace has, and what a veth pair
carries, read back from the kernel (netlink, /proc/PID/net/dev, /sys/class/net, socket errnos).

A new network namespace needs CAP_SYS_ADMIN: with it (root) the children make just that one;
without it (uid 65534) they make a user namespace of their own first (rootless), where bringing
lo up still works. A veth pair to the host needs CAP_NET_ADMIN over the host's namespace and
CAP_SYS_ADMIN to enter the child's: rootless, and inside the docker-like container (whose seccomp
profile refuses unshare without CAP_SYS_ADMIN), those tests skip with the probe's reason.
"""
import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from osvirt import env, tracker
from osvirt.container import namespaces, network
from osvirt.process import Children

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _kinds():
    """A new network namespace as this environment can make one: plain with CAP_SYS_ADMIN, else
    in a user namespace of its own (uid 0 inside mapped to this uid)."""
    answer = env.can("network_namespace")
    if not answer:
        pytest.skip(f"needs network_namespace: {answer.reason}")
    if env.can("cap_sys_admin"):
        return ["network"], {}
    return ["user", "network"], {"uid_map": [(0, os.geteuid(), 1)], "gid_map": [(0, os.getegid(), 1)]}


def run_inside(kids, *steps):
    """A child in a new network namespace that runs `steps` one by one, each when told to.

    Returns (started, step, finish): step(*args) has the child run its next step with `args`
    (JSON) and returns that step's JSON result; finish() lets it exit and returns its exit
    status. Between steps the child waits, so this process looks at the kernel while the
    namespace exists.
    """
    kinds, maps = _kinds()
    calls_r, calls_w = os.pipe()
    results_r, results_w = os.pipe()

    def serve():
        os.close(calls_w)
        os.close(results_r)
        with os.fdopen(calls_r) as calls:
            for fn in steps:
                line = calls.readline()
                if not line:
                    return 0  # the parent is done early
                os.write(results_w, json.dumps(fn(*json.loads(line))).encode() + b"\n")
            calls.readline()  # EOF: held until finish()
        return 0

    started = namespaces.fork_in(kids, kinds, serve, **maps)
    os.close(calls_r)
    os.close(results_w)
    results = os.fdopen(results_r)

    def step(*args):
        os.write(calls_w, json.dumps(args).encode() + b"\n")
        line = results.readline()
        assert line, f"the child failed: exit status {kids.wait(started.owned, timeout_s=30)}"
        return json.loads(line)

    def finish():
        os.close(calls_w)
        results.close()
        return kids.wait(started.owned, timeout_s=30)

    return started, step, finish


def _listed(interfaces):
    return {i.name: i for i in interfaces}


def _proc_net_dev(pid):
    """Interface names of `pid`'s network namespace, from /proc/PID/net/dev (no netlink)."""
    with open(f"/proc/{pid}/net/dev") as f:
        return sorted(line.split(":")[0].strip() for line in list(f)[2:])


def _echo_over_tcp(address):
    """A TCP connection to `address` port 0 (any): connect, send, accept, read back."""
    with socket.socket() as server:
        server.bind((address, 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                return conn.recv(4).decode()


def _connect_errno(address):
    try:
        _echo_over_tcp(address)
    except OSError as e:
        return e.errno
    return 0


def test_a_new_netns_has_only_lo_down_until_brought_up_then_127_0_0_1_works_and_the_hosts_are_invisible():
    def before():
        return [tuple(i) for i in network.interfaces()], _connect_errno("127.0.0.1")

    def after():
        network.loopback_up()
        echoed = _echo_over_tcp("127.0.0.1")
        return [tuple(i) for i in network.interfaces()], echoed, [name for _, name in socket.if_nameindex()]

    host_names = {name for _, name in socket.if_nameindex()}
    with Children() as kids:
        started, step, finish = run_inside(kids, before, after)
        (listed_before, refused), seen_from_here = step(), _proc_net_dev(started.pid)
        listed_after, echoed, indexed = step()
        assert finish() == 0
    (lo,) = [network.Interface(*row) for row in listed_before]
    assert (lo.name, lo.up, list(lo.addresses)) == ("lo", False, [])  # DOWN, and no 127.0.0.1 yet
    assert refused == errno.ENETUNREACH  # nothing answers, not even 127.0.0.1
    assert seen_from_here == ["lo"]  # /proc/PID/net/dev: the kernel's list by another path
    (lo,) = [network.Interface(*row) for row in listed_after]
    assert lo.name == "lo" and lo.up and "127.0.0.1/8" in lo.addresses
    assert echoed == "ping"
    assert indexed == ["lo"] and host_names - {"lo"}, "the host's own interfaces are not inside"
    assert lo.rx_packets >= 2 and lo.tx_packets == lo.rx_packets  # the TCP exchange went through lo


@pytest.mark.needs("cap_sys_admin", "cap_net_admin")
def test_loopback_up_from_outside_by_pid_and_by_namespace_file():
    with Children() as kids:
        first, _, finish_first = run_inside(kids)
        second, _, finish_second = run_inside(kids)
        assert not _listed(network.interfaces(first.pid))["lo"].up
        network.loopback_up(first.pid)
        network.loopback_up(f"/proc/{second.pid}/ns/net")
        assert _listed(network.interfaces(first.pid))["lo"].up
        assert _listed(network.interfaces(f"/proc/{second.pid}/ns/net"))["lo"].up
        fd = os.open(f"/proc/{second.pid}/ns/net", os.O_RDONLY)  # a namespace held open: by its fd's path
        try:
            assert _listed(network.interfaces(f"/proc/self/fd/{fd}"))["lo"].up
        finally:
            os.close(fd)
        assert _listed(network.interfaces())["lo"].up  # this process's own: untouched, and still listed
        assert finish_second() == 0 and finish_first() == 0  # the second holds the first's pipe: it goes first


def _udp_echo(host_ip, port, guest_ip):
    """Inside: a datagram from the guest end to the host end's echo, and its answer back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((guest_ip, 0))
        s.settimeout(0.1)
        for _ in range(50):  # one may be lost while the link comes up
            s.sendto(b"osvirt", (host_ip, port))
            try:
                return s.recvfrom(16)[0].decode()
            except socket.timeout:
                continue
    return None


@pytest.mark.needs("veth")
def test_a_veth_pair_carries_real_packets_and_the_counters_rise():
    used = network.host_networks()
    with Children() as kids:
        started, step, finish = run_inside(kids, _udp_echo)
        with network.Veth(started.pid) as veth, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
            host, guest = veth.host_address, veth.guest_address
            assert host.network == guest.network and host.network.prefixlen == 30
            assert host.network.subnet_of(ipaddress.IPv4Network("169.254.0.0/16"))
            assert not any(host.network.overlaps(other) for other in used)
            here = _listed(network.interfaces())[veth.host_name]
            assert here.kind == "veth" and here.up and here.carrier and str(host) in here.addresses
            assert os.path.isdir(f"/sys/class/net/{veth.host_name}")
            inside = _listed(network.interfaces(started.pid))
            assert sorted(inside) == ["eth0", "lo"] and str(guest) in inside["eth0"].addresses
            assert inside["eth0"].kind == "veth" and inside["eth0"].up
            assert _proc_net_dev(started.pid) == ["eth0", "lo"]

            # From the container's own process: a datagram to the host end, echoed here.
            echo.bind((str(host.ip), 0))
            before = _listed(network.interfaces())[veth.host_name]
            with Children() as echoer:
                pid = echoer.fork(_echo_one, echo)
                assert step(str(host.ip), echo.getsockname()[1], str(guest.ip)) == "osvirt"
                assert echoer.wait(pid, timeout_s=10) == 0
            after = _listed(network.interfaces())[veth.host_name]
            assert after.rx_packets > before.rx_packets and after.tx_packets > before.tx_packets

            # From here, through a socket made in the child's namespace: counted at both ends.
            trip = veth.round_trip(10)
            assert trip.echoes == 10 and trip.sent >= 10
            for counter in (trip.host_rx_packets, trip.host_tx_packets, trip.guest_rx_packets, trip.guest_tx_packets):
                assert counter >= 10, trip  # each echo: one packet each way, seen at both ends
        # Closed: the host end is gone, and its peer with it.
        assert not os.path.exists(f"/sys/class/net/{veth.host_name}")
        assert veth.host_name not in _listed(network.interfaces())
        assert sorted(_listed(network.interfaces(started.pid))) == ["lo"]
        veth.close()  # idempotent
        assert finish() == 0


def _echo_one(sock):
    data, source = sock.recvfrom(16)
    sock.sendto(data, source)


@pytest.mark.needs("veth")
def test_the_namespace_going_away_takes_the_pair_and_close_finds_nothing_to_do():
    with Children() as kids:
        started, _, finish = run_inside(kids)
        veth = network.Veth(started.pid, "169.254.77.1/30", check=False)
        assert str(veth.guest_address) == "169.254.77.2/30"  # the other host of the /30
        assert finish() == 0  # its last process gone, the kernel destroys the namespace, the pair in it
        deadline = time.monotonic() + 10
        while os.path.exists(f"/sys/class/net/{veth.host_name}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/sys/class/net/{veth.host_name}")
        veth.close()  # nothing to delete: no error, and the tracker forgets it


@pytest.mark.needs("veth")
def test_after_the_owner_is_sigkilled_the_tracker_deletes_the_host_end():
    # The namespace is this test's child's, which outlives the owner: the pair would stay but for the tracker.
    with Children() as kids:
        started, _, finish = run_inside(kids)
        code = textwrap.dedent(f"""
            import sys, time
            from osvirt.container import network
            veth = network.Veth({started.pid})
            print(veth.host_name, flush=True)
            time.sleep(600)
        """)
        owner = kids.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT)
        name = owner.stdout.readline().strip()
        assert name, owner.communicate()[1]
        assert os.path.isdir(f"/sys/class/net/{name}")
        owner.kill()
        err = owner.communicate(timeout=60)[1]  # its stderr closes when the tracker, which holds it, exits
        deadline = time.monotonic() + 10
        while os.path.exists(f"/sys/class/net/{name}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/sys/class/net/{name}"), err
        assert f"removed veth pair {name}: " in err, err
        assert sorted(_listed(network.interfaces(started.pid))) == ["lo"]  # the peer went with it
        assert finish() == 0


def _osvirt_links():
    return {name for _, name in socket.if_nameindex() if name.startswith(network.PREFIX)}


@pytest.mark.needs("veth")
def test_a_failed_construction_and_ctrl_c_leave_no_interface():
    before = _osvirt_links()
    with Children() as kids:
        started, _, finish = run_inside(kids)
        with pytest.raises(FileExistsError, match="RTM_NEWLINK") as refused:
            network.Veth(started.pid, guest_name="lo")  # lo exists in the target's namespace
        assert refused.value.errno == errno.EEXIST
        assert _osvirt_links() == before

        with network.Veth(started.pid) as first:  # its /30 is the host's now: a second may not take it
            with pytest.raises(OSError, match="overlaps the host's") as clash:
                network.Veth(started.pid, str(first.host_address), guest_name="eth1")
            assert clash.value.errno == errno.EADDRINUSE
            # Chosen by another process meanwhile (host_networks read before it took the /30): seen once
            # the address is on our end, and nothing is left.
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(network, "host_networks", lambda: [])
                with pytest.raises(OSError, match="meanwhile") as raced:
                    network.Veth(started.pid, str(first.host_address), guest_name="eth1")
            assert raced.value.errno == errno.EADDRINUSE
            assert _osvirt_links() == before | {first.host_name}

        with pytest.raises(KeyboardInterrupt):
            with network.Veth(started.pid) as veth:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
                time.sleep(10)
        assert not os.path.exists(f"/sys/class/net/{veth.host_name}") and _osvirt_links() == before
        assert finish() == 0


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((1,), {"guest_name": "a-name-of-16-bytes"}, ValueError, "1 to 15"),
    ((1,), {"guest_name": "eth/0"}, ValueError, "no '/'"),
    ((1,), {"guest_name": ""}, ValueError, "0 bytes"),
    ((1, "169.254.1.300/30"), {}, ValueError, "not an IPv4 address"),
    ((1, "fe80::1/64"), {}, ValueError, "not an IPv4 address"),
    ((1, "8.8.8.1/30"), {}, ValueError, "not link-local"),
    ((1, "169.254.1.0/30"), {}, ValueError, "network or broadcast"),
    ((1, "169.254.1.1/31"), {}, ValueError, "/8 to /30"),
    ((1, "169.254.1.1/30", "169.254.2.2/30"), {}, ValueError, "not in one network"),
    ((1, "169.254.1.1/30", "169.254.1.1/30"), {}, ValueError, "the same address"),
    ((0,), {}, ValueError, "own network namespace"),
    ((-1,), {}, ValueError, "negative"),
    ((True,), {}, TypeError, "pid or a network namespace file"),
    (("",), {}, ValueError, "empty"),
])
def test_bad_input_raises_before_any_system_call(monkeypatch, args, kwargs, error, match):
    def refuse(*args, **kwargs):
        raise AssertionError("a system call was made before the input was checked")
    for module, name in ((os, "open"), (os, "stat"), (network, "_iproute"), (network, "_socket_in"),
                         (tracker, "register")):
        monkeypatch.setattr(module, name, refuse)
    with pytest.raises(error, match=match):
        network.Veth(*args, **kwargs)


@pytest.mark.parametrize("call", [lambda: network.loopback_up(-1), lambda: network.interfaces(""),
                                  lambda: network.interfaces(1.5)])
def test_bad_targets_raise_before_any_system_call(monkeypatch, call):
    monkeypatch.setattr(os, "open", lambda *args: pytest.fail("opened before checking"))
    with pytest.raises((ValueError, TypeError)):
        call()


def test_a_pid_that_does_not_exist_is_a_clear_error():
    with Children() as kids:
        pid = kids.fork(int)
        assert kids.wait(pid) == 0
    with pytest.raises(FileNotFoundError, match=f"open\\(/proc/{pid}/ns/net\\).*no such process"):
        network.interfaces(pid)


def test_the_tracker_takes_only_osvirts_interface_names():
    network.check_osvirt_name("t", network._unique_name())
    assert len(network._unique_name()) <= network.IFNAMSIZ - 1
    for name in ("eth0", "osv12-xyz0", "osvabc-0123", f"osv{os.getpid()}-0123456789abcdef"):
        with pytest.raises(ValueError):
            tracker.register("veth", name)


def test_the_trackers_remover_deletes_only_a_veth():
    """An osvirt-named link of another kind (dummy, ifb or bridge: whichever this kernel has) is
    refused; tried in a namespace of the child's own, where it vanishes with the namespace."""
    def inside():
        from pyroute2 import IPRoute, NetlinkError
        name = network._unique_name()
        with IPRoute() as ipr:
            for kind in ("dummy", "ifb", "bridge"):
                try:
                    ipr.link("add", ifname=name, kind=kind)
                    break
                except NetlinkError as e:
                    if e.code != errno.EOPNOTSUPP:
                        raise
            else:
                return None
        try:
            network.delete_veth(name)
            refused = ""
        except ValueError as e:
            refused = str(e)
        kept = name in [n for _, n in socket.if_nameindex()]
        return refused, kept, network.delete_veth(network._unique_name())

    with Children() as kids:
        _, step, finish = run_inside(kids, inside)
        result = step()
        assert finish() == 0
    if result is None:
        pytest.skip("this kernel makes no dummy, ifb or bridge link (EOPNOTSUPP)")
    refused, kept, absent = result
    assert "not a veth" in refused and kept and absent is False
