/* Queued signals: the si_code values sigqueue(3) and kill(2) give, for
 * osvirt.ipc.signals (the calls are osvirt._quickcalls': csrc/cpython/quickcalls.c). */
#ifndef OSV_SIGNALS_H
#define OSV_SIGNALS_H
#include <signal.h>
#include "osv.h"

#ifdef OSV_CDEF
static const int SI_QUEUE;
static const int SI_USER;
#endif

#endif
