"""How many CPU threads a run's torch operations use, chosen from the machine as it is and from the network.

torch's default is one intra-op thread per core. Two things go wrong with it on a small machine: on a machine
where other work holds a core (a second experiment, a notebook), the OpenMP threads of every operation wait for
the one that is not running, so a run crawls at a fraction of its speed; and a small network's operations may be
too short for a second thread to pay for its start and join. So `choose_threads` counts the cores that other
processes leave free, and when more than one is, times training steps of the network on all free ones and on
one thread and keeps them unless one thread is clearly faster. As other work may start or end while a run goes
on, `OthersLoad` reads the cores it keeps busy since the last reading, so that the run can follow them (see
`callbacks.threads`). `passive_waiting` makes OpenMP threads sleep instead of spin while they wait where other
work is already running when the run starts (OpenMP reads this once, when torch loads); on an idle machine
OpenMP's default spinning is kept, as it is fastest there. `threads=N` overrides the choice; an inherited
`OMP_NUM_THREADS` (a sweep worker's share) caps it.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

# The free threads are kept unless one thread makes a training step at least this much faster: more threads are
# torch's own choice, and a core that other work takes later is given up while the run follows the load.
ONE_FASTER = 1.15
# Timed steps per thread count (after one untimed warm-up of each), alternating, medians compared.
TIMED_STEPS = 3
# A step that takes longer than this on all free threads is made of operations long enough to share: the
# threads are kept without timing one thread too.
LONG_STEP = 0.1
# A core counts as busy with other work when the others keep it this busy, as a fraction of its time.
BUSY_CORE = 0.5


def passive_waiting() -> None:
    """Where other work already keeps a core busy, OpenMP threads that wait for work sleep instead of spinning
    (`OMP_WAIT_POLICY=PASSIVE`), unless the user chose a policy. On an idle machine OpenMP's default is kept:
    its spinning makes a small network's short operations fastest. Effective only before torch is imported: call
    it first in an entry point."""
    if "OMP_WAIT_POLICY" not in os.environ and busy_cores() >= BUSY_CORE:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def has_bf16_instructions(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), from the kernel's `/proc/cpuinfo`
    flags; None where the kernel does not say (not Linux)."""
    try:
        with open(cpuinfo) as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cores(seconds: float = 0.1, samples: int = 3) -> float:
    """How many cores other processes keep busy: the least of `samples` readings of the kernel's CPU counters
    (`/proc/stat`) over `seconds` each, less this process's own use, so that a moment's work of another process
    (a file flushed, a tool starting) does not count as a busy core, while work that goes on does; 0.0 where
    the counters cannot be read (not Linux)."""
    return min(_busy_over(seconds) for _ in range(samples))


def _busy_over(seconds: float) -> float:
    """One reading of `busy_cores` over `seconds`."""
    load = OthersLoad()
    time.sleep(seconds)
    return load.read()


class OthersLoad:
    """The cores that other processes keep busy between one reading and the next: the kernel's CPU counters
    (`/proc/stat`) less this process's own use (`os.times`, all of its threads). A process this one started,
    such as a DataLoader worker, counts as other work: its core is not free for this process's threads. Reads
    0.0 where the counters cannot be read (not Linux)."""

    def __init__(self) -> None:
        self.last = self.counters()

    @staticmethod
    def counters() -> tuple[float, float, float, float] | None:
        """Clock ticks of all cores and of their idle time, this process's CPU seconds and the time."""
        try:
            with open("/proc/stat") as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle and iowait
        own = os.times()
        return sum(fields[:8]), idle, own.user + own.system, time.monotonic()

    def read(self) -> float:
        """The cores others kept busy since the last reading (or since this object was made)."""
        before, after = self.last, self.counters()
        self.last = after
        if before is None or after is None or after[0] - before[0] <= 0:
            return 0.0
        total, idle = after[0] - before[0], after[1] - before[1]
        own = (after[2] - before[2]) / max(after[3] - before[3], 1e-6)
        return max(0.0, (total - idle) / total * (os.cpu_count() or 1) - own)


def free_cores(limit: int | None = None, busy: float | None = None) -> int:
    """The cores of this process (at most `limit`) that other work does not keep busy, at least one: a core is
    taken when the others keep it at least `BUSY_CORE` busy."""
    limit = usable_cores() if limit is None else limit
    busy = busy_cores() if busy is None else busy
    taken = math.floor(busy + (1 - BUSY_CORE))
    return max(1, min(limit, limit - taken))


@dataclass(frozen=True)
class ThreadChoice:
    """`threads` and why; `follow_load`: whether the run may change them as other work takes or frees cores (only
    a choice made from the free cores of the whole machine: not `threads=N`, a sweep worker's or a DDP process's
    share, nor one thread that timing found faster)."""

    threads: int
    why: str
    follow_load: bool = False


def choose_threads(
    requested: int | None, time_step: Callable[[int], float] | None = None, processes: int = 1
) -> ThreadChoice:
    """The intra-op thread count of a run, and why. `requested` (the `threads` key) wins when given. One of
    `processes` training processes on this machine (DDP on CPU) takes its share of the cores, as Lightning gives
    it. Else the cores other work leaves free, and where that is more than one and `time_step(n)` (the seconds of
    one training step on n threads) is given: all of them for a step longer than `LONG_STEP`, else all of them
    unless one thread is `ONE_FASTER`."""
    if requested is not None:
        return ThreadChoice(requested, f"threads={requested} as set")
    limit = usable_cores()
    if processes > 1:
        share = max(1, limit // processes)
        return ThreadChoice(share, f"one of {processes} training processes: its share of {limit} cores")
    inherited = os.environ.get("OMP_NUM_THREADS", "")
    if inherited.isdigit() and 0 < int(inherited) < limit:
        share = int(inherited)
        return ThreadChoice(share, f"OMP_NUM_THREADS={share} (this process's share, e.g. of a parallel sweep)")
    if limit == 1:
        return ThreadChoice(1, "one core for this process")
    busy = busy_cores()
    free = free_cores(limit, busy)
    cores = f"{free} of {limit} cores free (others keep {busy:.1f} busy)"
    if free == 1 or time_step is None:
        return ThreadChoice(free, cores, follow_load=True)
    first = time_step(free)
    if first > LONG_STEP:
        why = f"a training step takes {first * 1e3:.0f} ms on {free} threads; {cores}"
        return ThreadChoice(free, why, follow_load=True)
    one, many = step_times(time_step, free)
    timing = f"a training step takes {one * 1e3:.1f} ms on one thread, {many * 1e3:.1f} ms on {free}"
    if one * ONE_FASTER <= many:
        return ThreadChoice(1, f"{timing}; {cores}")
    return ThreadChoice(free, f"{timing}; {cores}", follow_load=True)


def step_times(time_step: Callable[[int], float], threads: int) -> tuple[float, float]:
    """The median seconds of a step on one thread and on `threads`, timed alternately after a warm-up of each."""
    times: dict[int, list[float]] = {1: [], threads: []}
    for repeat in range(TIMED_STEPS + 1):
        for n in (1, threads):
            seconds = time_step(n)
            if repeat:
                times[n].append(seconds)
    return statistics.median(times[1]), statistics.median(times[threads])
