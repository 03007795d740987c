#include <string.h>

#include "msgqueue.h"

/* mq_timed* take an absolute CLOCK_REALTIME deadline, computed just before
 * the call: only a wall-clock jump during the call itself moves it. */
int osv_mq_send(mqd_t mqd, const char *msg, size_t len, unsigned int priority, int64_t timeout_ns)
{
    struct timespec ts;

    if (timeout_ns < 0)
        return mq_send(mqd, msg, len, priority);
    osv_deadline(CLOCK_REALTIME, timeout_ns, &ts);
    return mq_timedsend(mqd, msg, len, priority, &ts);
}

ssize_t osv_mq_receive(struct osv_mq_receive *r)
{
    struct timespec ts;

    if (r->timeout_ns < 0)
        return mq_receive(r->mqd, r->buf, r->size, &r->priority);
    osv_deadline(CLOCK_REALTIME, r->timeout_ns, &ts);
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
