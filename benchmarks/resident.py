"""The process's peak resident memory, restartable, so that a benchmark can report the peak of one
stage (the training steps) rather than of the whole run. Standard library only: the PyTorch
reference scripts use it too, under an interpreter without this toolkit's packages."""
import resource


def restart_peak():
    """Starts a new peak at the current resident size (Linux 4.0 and later: "5" written to
    /proc/self/clear_refs resets VmHWM). Returns False where the system cannot; peak_mb() then
    stays the whole run's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field):
    """The field ("VmRSS", "VmHWM") of /proc/self/status in MB, or None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_mb():
    """The resident memory now in MB (VmRSS), or None without /proc."""
    return _status_mb("VmRSS")


def peak_mb():
    """The peak resident memory in MB since the last restart_peak() (VmHWM), or, without /proc,
    the whole run's (ru_maxrss)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_peak_mb(fn, repeats=3):
    """The peak resident memory while fn() runs `repeats` times, from the resident size before it:
    what that stage needs of the machine, with what the process already held. None where the peak
    cannot be restarted."""
    if not restart_peak():
        return None
    for _ in range(repeats):
        fn()
    return peak_mb()
