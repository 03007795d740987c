"""Processes: children that die with their parent (spawn)."""
from osvirt.process.spawn import Children, fork, set_pdeathsig

__all__ = ["Children", "fork", "set_pdeathsig"]
