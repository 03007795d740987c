#include <unistd.h>

#include "namespaces.h"

int osv_unshare(int flags) { return unshare(flags); }

int osv_setns(int fd, int nstype) { return setns(fd, nstype); }

int osv_setdomainname(const char *name, size_t len) { return setdomainname(name, len); }
