#include <sys/prctl.h>
#include <unistd.h>

#include "seccomp.h"

int osv_prctl_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

int osv_seccomp_set_mode_filter(const void *program, unsigned short count, unsigned int flags)
{
    /* sock_fprog's filter is not const, but the kernel only copies it in. */
    struct sock_fprog fprog = {.len = count, .filter = (struct sock_filter *)program};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
}
