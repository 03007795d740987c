/* namespaces: unshare(2), setns(2) and setdomainname(2), which Python 3.10
 * lacks (os.unshare and os.setns came in 3.12), and the CLONE_NEW* flags
 * they take. */
#ifndef OSV_NAMESPACES_H
#define OSV_NAMESPACES_H
#include <sched.h>
#include <stddef.h>
#include <linux/sched.h> /* CLONE_NEWTIME, which older C libraries' <sched.h> lacks */

#ifdef OSV_CDEF
static const int CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWTIME,
    CLONE_NEWUSER, CLONE_NEWUTS;
#endif

int osv_unshare(int flags);
/* `fd`: a /proc/PID/ns file (nstype one CLONE_NEW* flag, or 0 for any) or,
 * since Linux 5.8, a pidfd (nstype one or more flags). */
int osv_setns(int fd, int nstype);
int osv_setdomainname(const char *name, size_t len);

#endif
