#include <sys/syscall.h>
#include <unistd.h>

#include "capabilities.h"

/* The C library has no capget/capset declaration (libcap's <sys/capability.h>
 * has): the system calls, with version 3's two 32-bit halves per set. */
int osv_capget(pid_t pid, uint64_t sets[3])
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = pid};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) == -1)
        return -1;
    sets[0] = data[0].effective | (uint64_t)data[1].effective << 32;
    sets[1] = data[0].permitted | (uint64_t)data[1].permitted << 32;
    sets[2] = data[0].inheritable | (uint64_t)data[1].inheritable << 32;
    return 0;
}

int osv_capset(const uint64_t sets[3])
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(sets[0] >> (32 * i));
        data[i].permitted = (uint32_t)(sets[1] >> (32 * i));
        data[i].inheritable = (uint32_t)(sets[2] >> (32 * i));
    }
    return syscall(SYS_capset, &header, data);
}

int osv_capbset_drop(int cap) { return prctl(PR_CAPBSET_DROP, cap, 0, 0, 0); }

int osv_cap_ambient(int op, int cap) { return prctl(PR_CAP_AMBIENT, op, cap, 0, 0); }

int osv_set_keepcaps(int keep) { return prctl(PR_SET_KEEPCAPS, keep, 0, 0, 0); }
