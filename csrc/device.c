#include "device.h"

long long osv_ioctl_int(int fd, unsigned long request)
{
    /* Only `value` is read back; `room` is for a request that writes more. */
    union {
        int value;
        unsigned char room[OSV_IOCTL_ARG_MAX];
    } arg;
    arg.value = 0;
    if (ioctl(fd, request, &arg) == -1)
        return OSV_IOCTL_INT_FAILED;
    return arg.value;
}
