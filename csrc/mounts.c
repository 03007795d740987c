#include <sys/syscall.h>
#include <unistd.h>

#include "mounts.h"

int osv_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
              const char *data)
{
    return mount(source, target, fstype, flags, data);
}

int osv_umount2(const char *target, int flags) { return umount2(target, flags); }

int osv_pivot_root(const char *new_root, const char *put_old)
{
    return syscall(SYS_pivot_root, new_root, put_old);
}
