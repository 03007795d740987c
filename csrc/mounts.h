/* mounts: the mount table of a container's own mount namespace: mount(2),
 * umount2(2), pivot_root(2), mount_setattr(2). One kernel call per function;
 * which call, with which flags, is osvirt/container/mounts.py's choice. */
#ifndef OSV_MOUNTS_H
#define OSV_MOUNTS_H
#include <fcntl.h>
#include <stdint.h>
#include <sys/mount.h>

#ifdef OSV_CDEF
static const unsigned long MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT;
static const unsigned long MS_MANDLOCK, MS_DIRSYNC, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME;
static const unsigned long MS_BIND, MS_MOVE, MS_REC, MS_SILENT, MS_UNBINDABLE, MS_PRIVATE;
static const unsigned long MS_SLAVE, MS_SHARED, MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME;
static const int MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW;
static const unsigned int AT_RECURSIVE;
static const uint64_t MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC;
#endif

/* source, fstype and data may be NULL (a bind or a propagation change reads none). */
int osv_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
              const char *data);
int osv_umount2(const char *target, int flags);
/* pivot_root(2) has no glibc wrapper: the raw system call. */
int osv_pivot_root(const char *new_root, const char *put_old);
/* mount_setattr(2) (Linux >= 5.12; no wrapper before glibc 2.36): MOUNT_ATTR_* set and cleared on
 * the mount at `path`, with AT_RECURSIVE on every mount under it too. ENOSYS where the headers lack it. */
int osv_mount_setattr(const char *path, unsigned int flags, uint64_t attr_set, uint64_t attr_clr);

#endif
