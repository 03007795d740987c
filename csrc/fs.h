/* Filesystem calls the stdlib lacks: statfs(2)'s f_type and fallocate(2)
 * with a mode. The layouts of struct fiemap and struct flock come from the
 * headers here too, so Python builds and parses them without retyping. */
#ifndef OSV_FS_H
#define OSV_FS_H
#include "osv.h"
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>

#ifdef OSV_CDEF
/* Superblock magics statfs reports in f_type, from <linux/magic.h>. */
static const long EXT4_SUPER_MAGIC;     /* ext2, ext3 and ext4 share it */
static const long XFS_SUPER_MAGIC;
static const long BTRFS_SUPER_MAGIC;
static const long TMPFS_MAGIC;
static const long RAMFS_MAGIC;
static const long OVERLAYFS_SUPER_MAGIC;
static const long FUSE_SUPER_MAGIC;
static const long NFS_SUPER_MAGIC;
static const long F2FS_SUPER_MAGIC;
static const long EXFAT_SUPER_MAGIC;
static const long MSDOS_SUPER_MAGIC;
static const long SQUASHFS_MAGIC;
static const long PROC_SUPER_MAGIC;
static const long SYSFS_MAGIC;
static const long DEVPTS_SUPER_MAGIC;
static const long CGROUP_SUPER_MAGIC;    /* cgroup v1 */
static const long CGROUP2_SUPER_MAGIC;

/* FIEMAP: the ioctl, its request flag and the extent flags, from <linux/fs.h>
 * and <linux/fiemap.h>; the structs' leading fields, their sizes from C. */
static const unsigned long FS_IOC_FIEMAP;
static const int FIEMAP_FLAG_SYNC;
static const int FIEMAP_EXTENT_LAST;
static const int FIEMAP_EXTENT_UNKNOWN;
static const int FIEMAP_EXTENT_DELALLOC;
static const int FIEMAP_EXTENT_ENCODED;
static const int FIEMAP_EXTENT_DATA_ENCRYPTED;
static const int FIEMAP_EXTENT_NOT_ALIGNED;
static const int FIEMAP_EXTENT_DATA_INLINE;
static const int FIEMAP_EXTENT_DATA_TAIL;
static const int FIEMAP_EXTENT_UNWRITTEN;
static const int FIEMAP_EXTENT_MERGED;
static const int FIEMAP_EXTENT_SHARED;
struct fiemap {
    uint64_t fm_start;
    uint64_t fm_length;
    uint32_t fm_flags;
    uint32_t fm_mapped_extents;
    uint32_t fm_extent_count;
    ...;
};
struct fiemap_extent {
    uint64_t fe_logical;
    uint64_t fe_physical;
    uint64_t fe_length;
    uint32_t fe_flags;
    ...;
};

/* fcntl(2) record locks: struct flock as this ABI lays it out. */
struct flock {
    short l_type;
    short l_whence;
    off_t l_start;
    off_t l_len;
    pid_t l_pid;
    ...;
};

/* fallocate(2) modes, from <linux/falloc.h>. */
static const int FALLOC_FL_KEEP_SIZE;
static const int FALLOC_FL_PUNCH_HOLE;
#endif

/* statfs(2): the filesystem's magic (f_type) under path. 0, or -1 with errno. */
int osv_statfs_type(const char *path, long *f_type);

/* fallocate(2) with a mode (os.posix_fallocate has none, and glibc's falls
 * back to writing zeros where the filesystem lacks fallocate). */
int osv_fallocate(int fd, int mode, off_t offset, off_t length);

#endif
