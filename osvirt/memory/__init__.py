"""Memory: mappings, protection, faults, residency and swap (seed §4.2)."""
from osvirt.errors import ProtectionFault
from osvirt.memory.counters import Usage, children_faults, usage
from osvirt.memory.mapping import (MADV, PAGE_SIZE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
                                   SEGV_ACCERR, SEGV_MAPERR, Mapping, huge_page_size)
from osvirt.memory.procfs import PageState, Vma, pagemap, status
from osvirt.memory.swapfile import SwapFile, swaps
from osvirt.memory.userfault import userfaultfd

__all__ = ["MADV", "PAGE_SIZE", "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE",
           "SEGV_ACCERR", "SEGV_MAPERR", "Mapping", "PageState", "ProtectionFault", "SwapFile", "Usage", "Vma",
           "children_faults", "huge_page_size", "pagemap", "status", "swaps", "usage", "userfaultfd"]
