"""How busy the whole machine is, so benchmarks can flag rounds disturbed by other work."""
import os


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux), summed over cores."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
