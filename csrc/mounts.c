#include <errno.h>
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

int osv_mount_setattr(const char *path, unsigned int flags, uint64_t attr_set, uint64_t attr_clr)
{
#ifdef SYS_mount_setattr
    struct mount_attr attr = {.attr_set = attr_set, .attr_clr = attr_clr};
    return syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr);
#else
    errno = ENOSYS;
    return -1;
#endif
}
