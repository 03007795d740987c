import sys

from osvirt.ipc import Fifo
from osvirt.process import Children


def test_an_unrelated_process_talks_back_over_a_second_fifo():
    with Fifo("request") as request, Fifo("reply") as reply, Children() as kids:
        peer = kids.spawn([sys.executable, "-m", "osvirt.ipc.echo", request.path, reply.path])
        request.write_all(b"hello\n", timeout_s=30)
        answer = reply.read_all(timeout_s=30)
        assert peer.wait(timeout=30) == 0
    assert answer == b"%d hello\n" % peer.pid
