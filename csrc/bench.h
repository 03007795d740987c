/* C loops for `osvirt bench`: each runs one operation n times and returns the
 * elapsed ns (CLOCK_MONOTONIC), or -1 with errno. The loop has the shape
 * `for (i = 0; i < n; i++) { operation; }`; osv_bench_empty is that shape with
 * nothing in it, so its time is the loop overhead the others include.
 * The *_echo and *_drain functions are the other end of a two-process loop:
 * the pipe ones serve until end of file and return 0, the queue ones until
 * they are killed (or a call fails: -1). */
#ifndef OSV_BENCH_H
#define OSV_BENCH_H
#include <mqueue.h>
#include <pthread.h>
#include <semaphore.h>
#include "osv.h"

int64_t osv_bench_empty(int64_t n);
int64_t osv_bench_getppid(int64_t n);

/* write 1 byte to wfd, read 1 byte back from rfd */
int64_t osv_bench_pipe_round_trip(int wfd, int rfd, int64_t n);
int osv_bench_pipe_echo(int rfd, int wfd);
/* write size bytes from buf to fd (all of them) */
int64_t osv_bench_pipe_write(int fd, const void *buf, size_t size, int64_t n);
int osv_bench_pipe_drain(int fd, void *buf, size_t size);

/* kill(getpid(), signo) with a counting handler installed (the previous
 * action restored after); EPROTO when fewer than n signals were delivered */
int64_t osv_bench_kill_self(int signo, int64_t n);

/* sigqueue(getpid(), signo, i) then sigwaitinfo for it; signo must be blocked.
 * EPROTO when the signal or value accepted is not the one sent */
int64_t osv_bench_sigqueue_self(int signo, int64_t n);

/* fork(), the child _exit(0)s, the parent waitpid()s */
int64_t osv_bench_fork(int64_t n);
/* posix_spawn(path) with no arguments and an empty environment, then
 * waitpid(); -1 when it does not start or exits other than 0: the bare
 * process start a container wraps (osvirt bench container-start) */
int64_t osv_bench_spawn_wait(const char *path, int64_t n);
int64_t osv_bench_sched_yield(int64_t n);

/* one write fault on each of n pages of a fresh anonymous mapping, MAP_SHARED
 * if shared else MAP_PRIVATE (MADV_NOHUGEPAGE: one fault per 4 KiB page); the
 * mmap and munmap are not timed */
int64_t osv_bench_touch_fresh(int shared, int64_t n);
/* mmap(MAP_PRIVATE | MAP_ANONYMOUS) of size bytes, then munmap */
int64_t osv_bench_mmap_munmap(size_t size, int64_t n);

/* mprotect of the page at addr (the caller's) to PROT_READ, then back to PROT_READ | PROT_WRITE */
int64_t osv_bench_mprotect(uintptr_t addr, int64_t n);

/* send size bytes of buf on `to`, receive the reply from `from` into buf */
int64_t osv_bench_mq_round_trip(mqd_t to, mqd_t from, void *buf, size_t size, int64_t n);
int osv_bench_mq_echo(mqd_t from, mqd_t to, void *buf, size_t size);
/* SysV: send type 1 on msqid, receive type 2 (the echo answers type 1 with 2) */
int64_t osv_bench_msg_round_trip(int msqid, int64_t n);
int osv_bench_msg_echo(int msqid);

/* pwrite size bytes at offset 0, then fsync */
int64_t osv_bench_pwrite_fsync(int fd, const void *buf, size_t size, int64_t n);
/* durable replace of target (a path in dir), as osvirt.fs.durable_write does:
 * stat target for its mode, open(dir, O_TMPFILE, 0600), fchmod, write size
 * bytes of buf, fsync, open dir, linkat /proc/self/fd/N to temp (a name in
 * dir), renameat over target, close, fsync dir, close */
int64_t osv_bench_durable_write(const char *dir, const char *target, const char *temp,
                                const void *buf, size_t size, int64_t n);
int64_t osv_bench_fionread(int fd, int64_t n);

/* The sync loops work on `shared`: a MAP_SHARED mapping of at least
 * osv_bench_shared_size() bytes (osvirt.bench checks), set up once by
 * osv_bench_shared_init and then inherited by forked children. It holds a
 * mutex made as osvirt.sync.Mutex, Lock and RLock make it (process-shared,
 * error-checking, robust), a process-shared
 * condition on CLOCK_MONOTONIC, a process-shared semaphore at 0, a turn word,
 * and two events (ping, pong) made as osvirt.sync.Event makes one. */
size_t osv_bench_shared_size(void);
int osv_bench_shared_init(void *shared);
/* pthread_mutex_lock, pthread_mutex_unlock */
int64_t osv_bench_mutex_lock_unlock(void *shared, int64_t n);
/* sem_post, sem_wait */
int64_t osv_bench_sem_post_wait(void *shared, int64_t n);
/* under the mutex: turn = 1, signal, wait until the echo sets turn back to 0 */
int64_t osv_bench_cond_round_trip(void *shared, int64_t n);
int osv_bench_cond_echo(void *shared);
/* ping.set(), pong.wait(), pong.clear(); the echo: ping.wait(), ping.clear(), pong.set() */
int64_t osv_bench_event_round_trip(void *shared, int64_t n);
int osv_bench_event_echo(void *shared);

#endif
