"""KVM: the API version and a few capabilities, from /dev/kvm."""
import pytest

from osvirt import env
from osvirt.device import kvm


@pytest.mark.needs("kvm")
def test_api_version_is_12():
    with kvm.Kvm() as k:
        assert k.api_version() == kvm.API_VERSION == 12


@pytest.mark.needs("kvm")
def test_check_extension_answers_for_capabilities():
    with kvm.Kvm() as k:
        assert k.check_extension("KVM_CAP_USER_MEMORY") == 1  # every KVM has it
        assert k.check_extension("KVM_CAP_MAX_VCPUS") >= k.check_extension("KVM_CAP_NR_VCPUS") >= 1
        assert k.check_extension(0x7FFFFFFF) == 0  # a capability no kernel has
        with pytest.raises(ValueError, match="unknown capability"):
            k.check_extension("KVM_CAP_TIME_TRAVEL")
        with pytest.raises(ValueError):
            k.check_extension(-1)
    k.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        k.api_version()


def test_the_probe_and_the_open_agree():
    answer = env.can("kvm")
    assert answer.reason
    if answer:
        kvm.Kvm().close()
        return
    with pytest.raises(OSError) as e:
        kvm.Kvm()
    assert "open(/dev/kvm)" in str(e.value) and e.value.strerror.split(": ")[-1] in answer.reason
