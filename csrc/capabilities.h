/* capabilities: capget/capset (the 64-bit version 3 layout) and the prctl
 * calls on the bounding and ambient sets and keep-caps. The capability
 * numbers come from <linux/capability.h>: osvirt/_build_native.py lists its
 * CAP_* macros into osv_capabilities, numbered by the C compiler. */
#ifndef OSV_CAPABILITIES_H
#define OSV_CAPABILITIES_H
#include <linux/capability.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/types.h>

#ifdef OSV_CDEF
static const int CAP_LAST_CAP;
static const int PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_LOWER, PR_CAP_AMBIENT_CLEAR_ALL;
#endif

typedef struct {
    const char *name;
    int nr;
} osv_capability;
extern const osv_capability osv_capabilities[];
extern const int osv_capability_count;

/* sets[0..2]: effective, permitted, inheritable, each a 64-bit mask. */
int osv_capget(pid_t pid, uint64_t sets[3]);
int osv_capset(const uint64_t sets[3]);
int osv_capbset_drop(int cap);
/* op: PR_CAP_AMBIENT_RAISE, _LOWER (cap) or _CLEAR_ALL (cap 0). */
int osv_cap_ambient(int op, int cap);
int osv_set_keepcaps(int keep);

#endif
