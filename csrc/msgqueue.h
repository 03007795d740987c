/* Message queues, one send or receive per call: POSIX mq_* on a descriptor,
 * System V msg* on an id, of queues posix_ipc and sysv_ipc create and remove
 * (osvirt.ipc.mqueue). Theirs hide errno (one BusyError for EAGAIN and
 * ETIMEDOUT) and allocate a receive buffer per call; these return -1 with the
 * kernel's errno and use the caller's buffer.
 * (Not csrc/mqueue.h: with -Icsrc it would shadow glibc's <mqueue.h>.) */
#ifndef OSV_MSGQUEUE_H
#define OSV_MSGQUEUE_H
#include <mqueue.h>
#include <sys/msg.h>
#include "osv.h"

#ifdef OSV_CDEF
static const int IPC_NOWAIT;
#endif

/* mq_send, or with timeout_ns >= 0 mq_timedsend with a deadline timeout_ns
 * from now: 0, or -1 with errno (EAGAIN on an O_NONBLOCK descriptor,
 * ETIMEDOUT, EINTR, EMSGSIZE, EBADF). */
int osv_mq_send(mqd_t mqd, const char *msg, size_t len, unsigned int priority, int64_t timeout_ns);

/* One receiver's buffer for osv_mq_receive, with the call's other arguments,
 * so that the call takes one pointer (cffi's cheapest call). The caller sets
 * all but `priority`, which the call fills in; `size` is the room in `buf`
 * (mq_receive fails EMSGSIZE when it is below the queue's mq_msgsize). */
struct osv_mq_receive {
    mqd_t mqd;
    unsigned int priority;
    int64_t timeout_ns;   /* < 0: mq_receive; else mq_timedreceive, deadline timeout_ns from now */
    size_t size;
    char buf[];
};

/* The length of the message received into r->buf, its priority in
 * r->priority; or -1 with errno (EAGAIN on an O_NONBLOCK descriptor,
 * ETIMEDOUT, EINTR, EMSGSIZE, EBADF). */
ssize_t osv_mq_receive(struct osv_mq_receive *r);

/* One System V message buffer with the arguments of a call on it: msgsnd and
 * msgrcv take &mtype, which mtext directly follows as in their struct msgbuf.
 * `size` is the room in mtext. */
struct osv_msg {
    int msqid;
    size_t size;
    long mtype;
    char mtext[];
};

/* msgsnd of `len` (<= m->size) bytes from msg with type `type`, copied into
 * m first: 0, or -1 with errno (EAGAIN with IPC_NOWAIT when the queue is
 * full, EINTR, EINVAL, EIDRM). */
int osv_msgsnd(struct osv_msg *m, long type, const char *msg, size_t len, int flags);

/* msgrcv (msgtyp `type`) into m: the text's length, its type in m->mtype; or
 * -1 with errno (ENOMSG with IPC_NOWAIT, E2BIG, EINTR, EIDRM). */
ssize_t osv_msgrcv(struct osv_msg *m, long type, int flags);

#endif
