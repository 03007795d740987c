"""Processes: children that die with their parent (spawn), and how the kernel schedules them (sched)."""
from osvirt.process.sched import (
    NICE_0_WEIGHT, SCHED_PRIO_TO_WEIGHT, BusyChildren, ContextSwitches, Policy, SchedAttr,
    context_switches, cpu_shares, cpu_time_ns, getpriority, sched_getattr, sched_getscheduler,
    sched_rr_get_interval, sched_setaffinity, sched_setattr, sched_setscheduler, setpriority, spin,
)
from osvirt.process.spawn import Children, fork, ready, set_pdeathsig, signals_deferred

__all__ = [
    "Children", "fork", "ready", "set_pdeathsig", "signals_deferred",
    "Policy", "SchedAttr", "ContextSwitches", "NICE_0_WEIGHT", "SCHED_PRIO_TO_WEIGHT",
    "sched_setaffinity", "setpriority", "getpriority", "sched_setscheduler", "sched_getscheduler",
    "sched_setattr", "sched_getattr", "sched_rr_get_interval",
    "cpu_time_ns", "context_switches", "cpu_shares", "spin", "BusyChildren",
]
