import json
import os
import resource

import pytest

from osvirt import env


def _cap_eff():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)


def test_capabilities_decode_capeff_bit_by_bit():
    mask = _cap_eff()
    names = env.capabilities()
    assert sum(1 << env.CAPABILITIES.index(n) for n in names) == mask & ((1 << len(env.CAPABILITIES)) - 1)


def test_capabilities_decode_a_known_mask():
    assert env.capabilities(1 << 23 | 1 << 21) == {"CAP_SYS_NICE", "CAP_SYS_ADMIN"}


def test_not_asks_the_opposite_with_the_same_reason():
    answer, opposite = env.can("cap_sys_admin"), env.can("not_cap_sys_admin")
    assert bool(opposite) != bool(answer) and opposite.reason == answer.reason
    with pytest.raises(ValueError, match="not_warp_drive"):
        env.can("not_warp_drive")


def test_capability_answer_names_the_capability():
    answer = env.can("cap_sys_nice")
    assert bool(answer) == ("CAP_SYS_NICE" in env.capabilities())
    assert "CAP_SYS_NICE" in answer.reason
    if not answer:
        assert answer.reason == "needs CAP_SYS_NICE (not in effective set)"


def test_kvm_answer_matches_opening_dev_kvm():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        opened = True
    except OSError:
        opened = False
    assert bool(env.can("kvm")) == opened


def test_swap_answer_matches_proc_swaps():
    active = len(open("/proc/swaps").read().splitlines()) > 1
    assert bool(env.can("swap")) == active


def test_unknown_probe_is_a_clear_error():
    with pytest.raises(ValueError, match="no probe named 'warp_drive'"):
        env.can("warp_drive")


def test_every_probe_answers_with_a_reason():
    for name, doc in env.probes().items():
        answer = env.can(name)
        assert isinstance(answer.ok, bool) and answer.reason, name
        assert doc, f"probe {name} says what it asks"


def test_facts_are_json_and_match_the_kernel():
    facts = json.loads(json.dumps(env.facts()))
    assert facts["euid"] == os.geteuid()
    assert facts["cpus"]["usable"] == sorted(os.sched_getaffinity(0))
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    assert facts["rlimits"]["RLIMIT_MEMLOCK"]["soft"] in (soft, "unlimited")
    assert facts["thp_mode"] == env.thp_mode()
    assert facts["cgroup"]["version"] in ("1", "2", "none mounted") or facts["cgroup"]["version"].startswith("hybrid")
