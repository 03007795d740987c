"""Files: filesystem inspection, storage, sharing and locks (seed §4.3)."""
from osvirt.fs.inspect import (Extent, FileInfo, Filesystem, data_ranges, fiemap, file_info,
                               filesystem, fs_type_name, hole_ranges)
from osvirt.fs.locks import LockHolder, flock, getlk, hold_in_child, setlk
from osvirt.fs.perms import (current_umask, drop_to, new_file_mode, searchable_dir, umask,
                              unsearchable_ancestor)
from osvirt.fs.storage import (FdEntry, copy_file_range, copy_sparse, durable_write,
                               durable_write_steps, fallocate, fd_entry, fd_table, open_flag_names,
                               pread, punch_hole, pwrite)

__all__ = [
    # inspect
    "Filesystem", "FileInfo", "Extent", "filesystem", "fs_type_name", "file_info",
    "data_ranges", "hole_ranges", "fiemap",
    # storage
    "FdEntry", "fd_table", "fd_entry", "open_flag_names", "pread", "pwrite",
    "durable_write", "durable_write_steps", "fallocate", "punch_hole",
    "copy_file_range", "copy_sparse",
    # perms
    "current_umask", "umask", "new_file_mode", "unsearchable_ancestor", "searchable_dir", "drop_to",
    # locks
    "LockHolder", "flock", "setlk", "getlk", "hold_in_child",
]
