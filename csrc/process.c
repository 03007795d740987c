#include <errno.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "process.h"

int osv_set_pdeathsig(int sig, pid_t expected_parent)
{
    if (prctl(PR_SET_PDEATHSIG, sig) == -1)
        return -1;
    if (getppid() != expected_parent) {  /* the parent died before prctl */
        errno = ESRCH;
        return -1;
    }
    return 0;
}
