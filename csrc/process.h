/* Process control the stdlib lacks. */
#ifndef OSV_PROCESS_H
#define OSV_PROCESS_H
#include "osv.h"

/* prctl(PR_SET_PDEATHSIG, sig), then a check that the parent did not die
 * before the call: returns 0, or -1 with errno (ESRCH when it had). */
int osv_set_pdeathsig(int sig, pid_t expected_parent);

#endif
