#!/usr/bin/env python3
"""Runs a command with a short EEVDF time slice: `perf/slice.py US -- COMMAND...`.

Linux 6.12+ lets a SCHED_OTHER task ask for its own slice (`sched_setattr` with
`sched_runtime`), and a task with a shorter slice than the running one preempts it on
wake-up. Other helpers' nice-19 builds otherwise keep a CPU for a whole default slice
(about 1.5 ms here, RUN_TO_PARITY) after a benchmark process wakes up, which shows up as
millisecond send lags and tails. The slice is inherited across fork and exec. Prints a
warning and runs the command unchanged where the kernel refuses.
"""
import ctypes
import os
import struct
import sys

SYS_SCHED_SETATTR = 314  # x86_64
SCHED_OTHER = 0


def set_slice(slice_us: int) -> None:
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    # struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes): size, policy, flags, nice,
    # priority, runtime, deadline, period.
    attr = struct.pack("=IIQiIQQQ", 48, SCHED_OTHER, 0, nice, 0, slice_us * 1000, 0, 0)
    buf = ctypes.create_string_buffer(attr, 48)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_SCHED_SETATTR, 0, buf, 0) != 0:
        err = ctypes.get_errno()
        print(f"slice.py: sched_setattr: {os.strerror(err)}; running with the default slice",
              file=sys.stderr)


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: perf/slice.py US -- COMMAND...")
    if int(args[0]) > 0:
        set_slice(int(args[0]))
    os.execvp(args[2], args[2:])


if __name__ == "__main__":
    main()
