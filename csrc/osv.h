/* Types shared by every csrc/ topic. In the cdef (see osvirt/_build_native.py)
 * the `...` lets cffi take each type's size from the C compiler. */
#ifndef OSV_H
#define OSV_H
#include <mqueue.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef OSV_CDEF
typedef int... pid_t;
typedef int... uid_t;
typedef int... off_t;
typedef int... mqd_t;
#endif

#endif
