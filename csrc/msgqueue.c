#include <string.h>
#include <time.h>

#include "msgqueue.h"

/* mq_timed* take an absolute CLOCK_REALTIME deadline. Taken here, just before
 * the call, from a relative timeout: only a wall-clock jump during the call
 * itself moves it. */
static struct timespec deadline(int64_t timeout_ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ns / 1000000000;
    ts.tv_nsec += timeout_ns % 1000000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

int osv_mq_send(mqd_t mqd, const char *msg, size_t len, unsigned int priority, int64_t timeout_ns)
{
    struct timespec ts;

    if (timeout_ns < 0)
        return mq_send(mqd, msg, len, priority);
    ts = deadline(timeout_ns);
    return mq_timedsend(mqd, msg, len, priority, &ts);
}

ssize_t osv_mq_receive(struct osv_mq_receive *r)
{
    struct timespec ts;

    if (r->timeout_ns < 0)
        return mq_receive(r->mqd, r->buf, r->size, &r->priority);
    ts = deadline(r->timeout_ns);
    return mq_timedreceive(r->mqd, r->buf, r->size, &r->priority, &ts);
}

int osv_msgsnd(struct osv_msg *m, long type, const char *msg, size_t len, int flags)
{
    m->mtype = type;
    memcpy(m->mtext, msg, len);
    return msgsnd(m->msqid, &m->mtype, len, flags);
}

ssize_t osv_msgrcv(struct osv_msg *m, long type, int flags)
{
    return msgrcv(m->msqid, &m->mtype, m->size, type, flags);
}
