/* mounts: the mount table of a container's own mount namespace: mount(2),
 * umount2(2), pivot_root(2). One kernel call per function; which call, with
 * which flags, is osvirt/container/mounts.py's choice. */
#ifndef OSV_MOUNTS_H
#define OSV_MOUNTS_H
#include <sys/mount.h>

#ifdef OSV_CDEF
static const unsigned long MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT;
static const unsigned long MS_MANDLOCK, MS_DIRSYNC, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME;
static const unsigned long MS_BIND, MS_MOVE, MS_REC, MS_SILENT, MS_UNBINDABLE, MS_PRIVATE;
static const unsigned long MS_SLAVE, MS_SHARED, MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME;
static const int MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW;
#endif

/* source, fstype and data may be NULL (a bind or a propagation change reads none). */
int osv_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
              const char *data);
int osv_umount2(const char *target, int flags);
/* pivot_root(2) has no glibc wrapper: the raw system call. */
int osv_pivot_root(const char *new_root, const char *put_old);

#endif
