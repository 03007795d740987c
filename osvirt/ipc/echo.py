"""An echo peer for two-way talk over two FIFOs, run as its own program.

`python -m osvirt.ipc.echo REQUEST REPLY` reads one line from the FIFO
REQUEST and writes `<its pid> <the line>` to the FIFO REPLY: a process
unrelated to its caller (a new image, not a fork) that finds both FIFOs by
their paths. It opens them with plain blocking opens, as any program would.
"""
import os
import sys

__all__ = ["echo"]


def echo(request_path: str, reply_path: str) -> None:
    """Read one line from the FIFO `request_path`, write `<pid> <line>` to the FIFO `reply_path`."""
    with open(request_path, "rb") as request:
        line = request.readline()
    with open(reply_path, "wb") as reply:
        reply.write(b"%d %s" % (os.getpid(), line))


if __name__ == "__main__":
    echo(*sys.argv[1:3])
