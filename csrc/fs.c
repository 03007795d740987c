#include <fcntl.h>
#include <sys/vfs.h>

#include "fs.h"

int osv_statfs_type(const char *path, long *f_type)
{
    struct statfs buf;

    if (statfs(path, &buf) == -1)
        return -1;
    *f_type = (long)buf.f_type;
    return 0;
}

int osv_fallocate(int fd, int mode, off_t offset, off_t length)
{
    return fallocate(fd, mode, offset, length);
}
