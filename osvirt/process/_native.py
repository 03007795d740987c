"""The one module of osvirt.process that touches the C extension."""
from osvirt._native import ffi, lib
from osvirt.errors import kernel_error


def set_pdeathsig(signo, expected_parent):
    if lib.osv_set_pdeathsig(signo, expected_parent) == -1:
        raise kernel_error(ffi.errno, f"prctl(PR_SET_PDEATHSIG, {signo})")
