"""virtio-blk (virtio 1.x, 5.2): a disk backed by a host file, on one request queue.

A request is one descriptor chain, framed as a byte stream (the device does
not assume where descriptors split it):

    readable: struct virtio_blk_req { le32 type; le32 reserved; le64 sector; }
              then, for OUT, the data to write
    writable: for IN, room for the data read; for GET_ID, 20 bytes;
              then one status byte: OK 0, IOERR 1, UNSUPP 2

Sectors are 512 bytes whatever the file's block size. The configuration space
starts with le64 capacity (in sectors); the device offers FLUSH, SEG_MAX and
BLK_SIZE, and RO for a read-only disk. A request past the end of the disk,
a write to a read-only disk or a host I/O error gets IOERR in its status byte:
that is the guest's answer, and the device goes on. Data moves between the
file and guest memory with preadv/pwritev on views of guest RAM, without a
copy through Python bytes.
"""
from __future__ import annotations

import os
import struct
from typing import Any

from osvirt._owned import OwnedFd
from osvirt.vm.virtio import ChainError, VirtioError
from osvirt.vm.virtio.mmio import VirtioMmio
from osvirt.vm.virtio.queue import Chain, Virtqueue, split

__all__ = ["VirtioBlk", "DEVICE_ID", "SECTOR_SIZE", "T_IN", "T_OUT", "T_FLUSH", "T_GET_ID",
           "S_OK", "S_IOERR", "S_UNSUPP", "F_SEG_MAX", "F_RO", "F_BLK_SIZE", "F_FLUSH", "ID_BYTES"]

DEVICE_ID = 2
SECTOR_SIZE = 512
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH = 2, 5, 6, 9
ID_BYTES = 20  # VIRTIO_BLK_ID_BYTES
QUEUE_SIZE = 256
SEG_MAX = QUEUE_SIZE - 2  # data descriptors in a request: the header and status take two
_HEADER = struct.Struct("<IIQ")
_NAMES = {T_IN: "in", T_OUT: "out", T_FLUSH: "flush", T_GET_ID: "get_id"}


class VirtioBlk(OwnedFd):
    """A virtio-blk device on the host file `path` (opened read-write unless `read_only`).
    Its size is the file's, rounded down to whole sectors; `close()` closes the file."""

    what = "virtio-blk disk"

    device_id = DEVICE_ID
    queue_sizes: tuple[int, ...] = (QUEUE_SIZE,)

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False, serial: str | None = None) -> None:
        self.path = os.fspath(path)
        self.read_only = read_only
        self.fd = os.open(self.path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
        try:
            self.capacity = os.fstat(self.fd).st_size // SECTOR_SIZE
            self.serial = (serial if serial is not None else os.path.basename(self.path)).encode()[:ID_BYTES]
        except BaseException:
            os.close(self.fd)
            raise
        self.features = (1 << F_SEG_MAX) | (1 << F_BLK_SIZE) | (1 << F_FLUSH) | ((1 << F_RO) if read_only else 0)
        self.requests = {name: 0 for name in (*_NAMES.values(), "unsupported")}
        self.errors = 0  # requests answered IOERR
        self.bytes_read = self.bytes_written = 0

    # -- the transport's side ----------------------------------------------------
    def bind(self, transport: VirtioMmio) -> None:
        pass  # a disk serves requests only when notified

    def config(self) -> bytes:
        # struct virtio_blk_config up to blk_size: capacity, size_max, seg_max, geometry, blk_size
        return struct.pack("<QIIHBBI", self.capacity, 0, SEG_MAX, 0, 0, 0, SECTOR_SIZE)

    def config_write(self, offset: int, data: bytes) -> None:
        pass  # writeback (offset 32) is not offered: nothing here is writable

    def reset(self) -> None:
        pass  # no state beyond the queue, which the transport drops

    def notify(self, transport: VirtioMmio, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            queue.push(chain.head, self.handle(chain))
        transport.used_buffers(queue)

    # -- requests ----------------------------------------------------------------
    def handle(self, chain: Chain) -> int:
        """Serve one request; the bytes written into the chain (data and status)."""
        if chain.writable_len < 1:
            raise ChainError(f"virtio-blk: request at head {chain.head} has no writable status byte")
        if chain.readable_len < _HEADER.size:
            self.requests["unsupported"] += 1
            self.errors += 1
            chain.write(bytes([S_IOERR]), split(chain.writable, chain.writable_len - 1)[1])
            return 1
        header, data_out = split(chain.readable, _HEADER.size)
        rtype, _reserved, sector = _HEADER.unpack(b"".join(bytes(v) for v in header))
        data_in, status_view = split(chain.writable, chain.writable_len - 1)
        name = _NAMES.get(rtype)
        self.requests[name or "unsupported"] += 1
        written = 0
        if rtype == T_IN:
            status, written = self._read(sector, data_in)
        elif rtype == T_OUT:
            status = self._write(sector, data_out)
        elif rtype == T_FLUSH:
            status = self._flush()
        elif rtype == T_GET_ID:
            written = chain.write(self.serial.ljust(ID_BYTES, b"\0"), data_in)
            status = S_OK
        else:
            status = S_UNSUPP
        if status == S_IOERR:
            self.errors += 1
        status_view[0][0] = status
        return written + 1

    def _in_range(self, sector: int, length: int) -> bool:
        return length % SECTOR_SIZE == 0 and sector + length // SECTOR_SIZE <= self.capacity

    def _read(self, sector: int, views: list[memoryview]) -> tuple[int, int]:
        length = sum(len(v) for v in views)
        if not self._in_range(sector, length):
            return S_IOERR, 0
        done = 0
        try:
            while done < length:  # preadv may return short; go on from where it stopped
                rest = split(views, done)[1]
                n = os.preadv(self.fd, rest, sector * SECTOR_SIZE + done)
                if n == 0:  # the file shrank under us
                    return S_IOERR, done
                done += n
        except OSError:
            return S_IOERR, done
        self.bytes_read += done
        return S_OK, done

    def _write(self, sector: int, views: list[memoryview]) -> int:
        length = sum(len(v) for v in views)
        if self.read_only or not self._in_range(sector, length):
            return S_IOERR
        done = 0
        try:
            while done < length:
                done += os.pwritev(self.fd, split(views, done)[1], sector * SECTOR_SIZE + done)
        except OSError:
            return S_IOERR
        self.bytes_written += done
        return S_OK

    def _flush(self) -> int:
        if self.read_only:
            return S_OK
        try:
            os.fdatasync(self.fd)
        except OSError:
            return S_IOERR
        return S_OK

    # -- state -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The counts (the disk's contents are the file's: a snapshot does not copy them)."""
        return {"path": self.path, "capacity": self.capacity, "requests": dict(self.requests),
                "errors": self.errors, "bytes_read": self.bytes_read, "bytes_written": self.bytes_written}

    def restore(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise VirtioError(f"virtio-blk restore: the snapshot's disk had {state['capacity']} sectors, "
                              f"{self.path} has {self.capacity}")
        self.requests = dict(state["requests"])
        self.errors, self.bytes_read, self.bytes_written = state["errors"], state["bytes_read"], state["bytes_written"]
