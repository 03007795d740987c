#include "osv.h"

void osv_deadline(int clock, int64_t timeout_ns, struct timespec *deadline)
{
    clock_gettime(clock, deadline);
    int64_t ns = deadline->tv_nsec + timeout_ns % 1000000000;
    deadline->tv_sec += timeout_ns / 1000000000 + ns / 1000000000;
    deadline->tv_nsec = ns % 1000000000;
}
