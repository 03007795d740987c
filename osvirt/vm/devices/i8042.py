"""The i8042 keyboard controller's reset line: what a PC guest pulses to reboot.

Writing 0xFE (pulse output line 0, wired to the CPU's reset) to the command
port 0x64 is how Linux's `reboot=k` and many boot loaders reset a PC.
kvmtool and Firecracker answer it by ending the VM, and so does this device:
it calls `on_reset()` (a Machine's request_stop). Reads of the status
register say the buffers are empty (no keyboard behind it); other commands
are dropped.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["I8042", "COMMAND_PORT", "CMD_RESET"]

COMMAND_PORT = 0x64
CMD_RESET = 0xFE


class I8042:
    """Attach at port 0x64, length 1."""

    def __init__(self, on_reset: Callable[[], object]) -> None:
        self.on_reset = on_reset
        self.resets = 0

    def io_in(self, offset: int, size: int) -> int:
        return 0  # status: output buffer empty, input buffer empty

    def io_out(self, offset: int, size: int, value: int) -> None:
        if value & 0xFF == CMD_RESET:
            self.resets += 1
            self.on_reset()

    def snapshot(self) -> dict[str, Any]:
        return {"resets": self.resets}

    def restore(self, state: dict[str, Any]) -> None:
        self.resets = state["resets"]
