#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>  /* renameat, snprintf */
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "process.h"  /* osv_set_pdeathsig */
#include "sync.h"

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int64_t osv_bench_empty(int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        __asm__ volatile("" ::: "memory");  /* keeps the compiler from removing the loop */
    return now_ns() - t0;
}

int64_t osv_bench_getppid(int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        getppid();  /* glibc does not cache it: one system call each */
    return now_ns() - t0;
}

int64_t osv_bench_pipe_round_trip(int wfd, int rfd, int64_t n)
{
    char c = 'x';
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (write(wfd, &c, 1) != 1 || read(rfd, &c, 1) != 1)
            return -1;
    return now_ns() - t0;
}

int osv_bench_pipe_echo(int rfd, int wfd)
{
    char c;
    ssize_t got;
    while ((got = read(rfd, &c, 1)) == 1)
        if (write(wfd, &c, 1) != 1)
            return -1;
    return got == 0 ? 0 : -1;
}

int64_t osv_bench_pipe_write(int fd, const void *buf, size_t size, int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (write(fd, buf, size) != (ssize_t)size)  /* a blocking pipe write is whole */
            return -1;
    return now_ns() - t0;
}

int osv_bench_pipe_drain(int fd, void *buf, size_t size)
{
    ssize_t got;
    while ((got = read(fd, buf, size)) > 0)
        ;
    return got == 0 ? 0 : -1;
}

static volatile sig_atomic_t delivered;

static void count_signal(int signo)
{
    delivered++;
}

int64_t osv_bench_kill_self(int signo, int64_t n)
{
    struct sigaction act = {.sa_handler = count_signal}, old;
    pid_t self = getpid();
    if (sigaction(signo, &act, &old) == -1)
        return -1;
    delivered = 0;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        kill(self, signo);  /* an unblocked signal to self is delivered before kill returns */
    int64_t elapsed = now_ns() - t0;
    sigaction(signo, &old, NULL);
    if (delivered != n) {
        errno = EPROTO;
        return -1;
    }
    return elapsed;
}

int64_t osv_bench_sigqueue_self(int signo, int64_t n)
{
    sigset_t set;
    siginfo_t info;
    pid_t self = getpid();
    sigemptyset(&set);
    sigaddset(&set, signo);
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        union sigval value = {.sival_int = (int)i};
        if (sigqueue(self, signo, value) == -1 || sigwaitinfo(&set, &info) == -1)
            return -1;
        if (info.si_signo != signo || info.si_value.sival_int != (int)i) {
            errno = EPROTO;
            return -1;
        }
    }
    return now_ns() - t0;
}

/* The kernel calls of osvirt.process.fork: SIGINT and SIGTERM blocked across
 * fork, the child's mask restored and PR_SET_PDEATHSIG with its parent checked. */
int64_t osv_bench_fork(int64_t n)
{
    sigset_t deferred, mask;
    sigemptyset(&deferred);
    sigaddset(&deferred, SIGINT);
    sigaddset(&deferred, SIGTERM);
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        pid_t parent = getpid();
        sigprocmask(SIG_BLOCK, &deferred, &mask);
        pid_t pid = fork();
        if (pid == 0) {
            sigprocmask(SIG_SETMASK, &mask, NULL);
            _exit(osv_set_pdeathsig(SIGKILL, parent) == -1);
        }
        sigprocmask(SIG_SETMASK, &mask, NULL);
        if (pid == -1 || waitpid(pid, NULL, 0) != pid)
            return -1;
    }
    return now_ns() - t0;
}

int64_t osv_bench_spawn_wait(const char *path, int64_t n)
{
    char *argv[] = {(char *)path, NULL};
    char *envp[] = {NULL};
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        pid_t pid;
        int status;
        if ((errno = posix_spawn(&pid, path, NULL, NULL, argv, envp)) != 0)
            return -1;
        if (waitpid(pid, &status, 0) != pid || status != 0)
            return -1;
    }
    return now_ns() - t0;
}

int64_t osv_bench_sched_yield(int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        sched_yield();
    return now_ns() - t0;
}

int64_t osv_bench_touch_fresh(int shared, int64_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, n * page, PROT_READ | PROT_WRITE,
                   (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    madvise(p, n * page, MADV_NOHUGEPAGE);  /* advisory: fails only where THP is absent */
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        ((volatile char *)p)[i * page] = 1;
    int64_t elapsed = now_ns() - t0;
    munmap(p, n * page);
    return elapsed;
}

int64_t osv_bench_mmap_munmap(size_t size, int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || munmap(p, size) == -1)
            return -1;
    }
    return now_ns() - t0;
}

int64_t osv_bench_mprotect(uintptr_t addr, int64_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = (void *)addr;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (mprotect(p, page, PROT_READ) == -1 || mprotect(p, page, PROT_READ | PROT_WRITE) == -1)
            return -1;
    return now_ns() - t0;
}

int64_t osv_bench_mq_round_trip(mqd_t to, mqd_t from, void *buf, size_t size, int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (mq_send(to, "x", 1, 0) == -1 || mq_receive(from, buf, size, NULL) != 1)
            return -1;
    return now_ns() - t0;
}

int osv_bench_mq_echo(mqd_t from, mqd_t to, void *buf, size_t size)
{
    for (;;) {
        ssize_t got = mq_receive(from, buf, size, NULL);
        if (got == -1 || mq_send(to, buf, got, 0) == -1)
            return -1;
    }
}

struct one_byte_msg {
    long mtype;
    char mtext[1];
};

int64_t osv_bench_msg_round_trip(int msqid, int64_t n)
{
    struct one_byte_msg m = {1, {'x'}};
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        m.mtype = 1;
        if (msgsnd(msqid, &m, 1, 0) == -1 || msgrcv(msqid, &m, 1, 2, 0) != 1)
            return -1;
    }
    return now_ns() - t0;
}

int osv_bench_msg_echo(int msqid)
{
    struct one_byte_msg m;
    for (;;) {
        if (msgrcv(msqid, &m, 1, 1, 0) == -1)
            return -1;
        m.mtype = 2;
        if (msgsnd(msqid, &m, 1, 0) == -1)
            return -1;
    }
}

int64_t osv_bench_pwrite_fsync(int fd, const void *buf, size_t size, int64_t n)
{
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (pwrite(fd, buf, size, 0) != (ssize_t)size || fsync(fd) == -1)
            return -1;
    return now_ns() - t0;
}

static int write_all(int fd, const char *buf, size_t size)
{
    while (size > 0) {
        ssize_t done = write(fd, buf, size);
        if (done == -1)
            return -1;
        buf += done;
        size -= done;
    }
    return 0;
}

static int fsync_close(int fd)
{
    int synced = fsync(fd);
    return close(fd) == -1 || synced == -1 ? -1 : 0;
}

int64_t osv_bench_durable_write(const char *dir, const char *target, const char *temp,
                                const void *buf, size_t size, int64_t n)
{
    const char *slash = strrchr(target, '/');
    const char *name = slash ? slash + 1 : target;  /* renamed beside dirfd, as durable_write does */
    char proc[32];
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        struct stat st;  /* the target's mode, kept, as osvirt.fs.durable_write does */
        mode_t mode = stat(target, &st) == 0 ? st.st_mode & 07777 : 0600;
        int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);  /* no name yet */
        if (fd == -1)
            return -1;
        if (fchmod(fd, mode) == -1 || write_all(fd, buf, size) == -1 || fsync(fd) == -1) {
            close(fd);
            return -1;
        }
        int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (dirfd == -1 || linkat(AT_FDCWD, proc, dirfd, temp, AT_SYMLINK_FOLLOW) == -1
                || renameat(dirfd, temp, dirfd, name) == -1) {
            close(fd);
            if (dirfd != -1)
                close(dirfd);
            return -1;
        }
        if (close(fd) == -1 || fsync_close(dirfd) == -1)
            return -1;
    }
    return now_ns() - t0;
}

int64_t osv_bench_fionread(int fd, int64_t n)
{
    int avail;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (ioctl(fd, FIONREAD, &avail) == -1)
            return -1;
    return now_ns() - t0;
}

struct shared {
    pthread_mutex_t mutex;
    osv_condition cond;  /* osvirt.sync.Condition's: its calls in csrc/sync.c */
    sem_t sem;
    int turn;
    osv_event ping, pong;  /* osvirt.sync.Event's: its calls in csrc/sync.c */
};

size_t osv_bench_shared_size(void)
{
    return sizeof(struct shared);
}

static int pthread_result(int err)
{
    if (err == 0)
        return 0;
    errno = err;
    return -1;
}

/* A process-shared, robust mutex of `type`: an error number, or 0. */
static int mutex_init(pthread_mutex_t *m, int type)
{
    pthread_mutexattr_t ma;
    int err = pthread_mutexattr_init(&ma);
    if (err != 0)
        return err;
    if ((err = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED)) == 0
        && (err = pthread_mutexattr_settype(&ma, type)) == 0
        && (err = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST)) == 0)
        err = pthread_mutex_init(m, &ma);
    pthread_mutexattr_destroy(&ma);
    return err;
}

int osv_bench_shared_init(void *shared)
{
    struct shared *s = shared;
    int err = mutex_init(&s->mutex, PTHREAD_MUTEX_ERRORCHECK);
    memset(&s->cond, 0, sizeof s->cond);
    s->ping.word = s->pong.word = 0;
    if (err != 0)
        return pthread_result(err);
    s->turn = 0;
    return sem_init(&s->sem, 1, 0);
}

int64_t osv_bench_mutex_lock_unlock(void *shared, int64_t n)
{
    pthread_mutex_t *m = &((struct shared *)shared)->mutex;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        int err = pthread_mutex_lock(m);
        if (err == 0)
            err = pthread_mutex_unlock(m);
        if (err != 0)
            return pthread_result(err);
    }
    return now_ns() - t0;
}

int64_t osv_bench_sem_post_wait(void *shared, int64_t n)
{
    struct shared *s = shared;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++)
        if (sem_post(&s->sem) == -1 || sem_wait(&s->sem) == -1)
            return -1;
    return now_ns() - t0;
}

/* Condition.wait() as osvirt.sync.Condition's, untimed, with s->mutex held: sleep
 * until a notify is owed to this waiter. 0, or -1 and errno. */
static int cond_wait(struct shared *s)
{
    int64_t notifies = osv_condition_enter(&s->cond);
    int rc;
    do
        rc = osv_condition_wait_for(&s->cond, &s->mutex, -1);
    while ((rc == 0 || errno == EINTR) && !osv_condition_take(&s->cond, notifies));
    osv_condition_leave(&s->cond);
    return rc == -1 && errno != EINTR ? -1 : 0;
}

int64_t osv_bench_cond_round_trip(void *shared, int64_t n)
{
    struct shared *s = shared;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        int err = pthread_mutex_lock(&s->mutex);
        if (err != 0)
            return pthread_result(err);
        s->turn = 1;
        int rc = osv_condition_notify(&s->cond, 1);
        while (rc == 0 && s->turn == 1)  /* until the echo hands the turn back */
            rc = cond_wait(s);
        pthread_mutex_unlock(&s->mutex);
        if (rc != 0)
            return -1;
    }
    return now_ns() - t0;
}

int osv_bench_cond_echo(void *shared)
{
    struct shared *s = shared;
    int err = pthread_mutex_lock(&s->mutex);
    if (err != 0)
        return pthread_result(err);
    for (;;) {
        while (s->turn != 1)
            if (cond_wait(s) == -1)
                return -1;
        s->turn = 0;
        if (osv_condition_notify(&s->cond, 1) == -1)
            return -1;
    }
}

/* Event.wait() as osvirt.sync.Event's, untimed: the flag set, or sleep until the word changes. */
static int event_wait(osv_event *e)
{
    uint32_t seen = osv_event_get(e);
    while (!(seen & 1) && osv_event_get(e) == seen)
        if (osv_event_wait_for(e, seen, -1) == -1 && errno != EINTR)
            return -1;
    return 0;
}

int64_t osv_bench_event_round_trip(void *shared, int64_t n)
{
    struct shared *s = shared;
    int64_t t0 = now_ns();
    for (int64_t i = 0; i < n; i++) {
        if (osv_event_set(&s->ping) == -1 || event_wait(&s->pong) == -1)
            return -1;
        osv_event_clear(&s->pong);
    }
    return now_ns() - t0;
}

int osv_bench_event_echo(void *shared)
{
    struct shared *s = shared;
    for (;;) {
        if (event_wait(&s->ping) == -1)
            return -1;
        osv_event_clear(&s->ping);
        if (osv_event_set(&s->pong) == -1)
            return -1;
    }
}
