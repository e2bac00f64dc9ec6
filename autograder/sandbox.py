"""Where a student's code runs: a bubblewrap sandbox with resource limits.

The student process (``student_process.py``) is started by one of two launchers:

- ``bubblewrap`` (Debian's ``bwrap``, the sandbox behind Flatpak): new user, pid,
  mount, network, IPC and UTS namespaces; uid 65534; no network; a read-only view
  of the Python installation and nothing else of the machine (not the grader, the
  hidden tests, the solutions or other submissions); a small tmpfs as its working
  folder; killed with its parent.
- ``rlimits only``, where bubblewrap can't run (some containers, e.g. Gradescope's):
  the same limits, and uid 65534 when the grader runs as root.

Both set rlimits on address space, CPU time, file size (so output floods stop at
``OUTPUT_LIMIT``), core dumps and open files, start the child in a session of its
own, and the grader kills everything the child started when it is done.

Where the grader may create control groups (cgroup v1, as root on these machines),
each child and everything it starts also runs in cgroups of its own that cap the
number of processes and threads (a fork bomb stops there; RLIMIT_NPROC does not hold
inside bubblewrap's user namespace), the CPU share (one core, so one submission can't
starve the others of a ``--jobs`` run) and the memory of all its processes together.
"""

import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
SCRATCH = "/scratch"  # the student's working folder inside the sandbox (a size-limited tmpfs)
OUTPUT_LIMIT = 16 * 2**20


@dataclass(frozen=True)
class Limits:
    address_space: int | None = 3 * 2**30  # bytes; None on CUDA, whose driver reserves huge virtual ranges
    cpu_seconds: int = 300
    file_size: int = OUTPUT_LIMIT
    open_files: int = 256
    # processes and threads: the child's pids cgroup where there is one; else RLIMIT_NPROC of
    # uid 65534, which holds only outside a user namespace (not under bubblewrap as root)
    processes: int = 256
    scratch_bytes: int = 64 * 2**20
    # for all the child's processes together, where cgroups are available
    cpus: float = 1.0
    memory: int = 3 * 2**30

    def apply(self):
        """Set the rlimits in the calling process (runs between fork and exec)."""
        if self.address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (self.address_space, self.address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size, self.file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))


CGROUP_ROOT = Path("/sys/fs/cgroup")
_cgroup_names = itertools.count()


def own_cgroup_v1(controller):
    """This process's cgroup folder for a cgroup v1 ``controller``, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = CGROUP_ROOT / controller / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


class Cgroups:
    """Control groups of one student process: caps on processes, CPU and memory for
    everything it starts, and a list of those processes to kill at the end."""

    def __init__(self, limits):
        self.folders = []
        self.controllers = []
        settings = {
            "pids": [("pids.max", limits.processes)],
            "cpu": [("cpu.cfs_period_us", 100_000), ("cpu.cfs_quota_us", int(limits.cpus * 100_000))],
            "memory": [("memory.limit_in_bytes", limits.memory), ("memory.memsw.limit_in_bytes", limits.memory)],
        }
        name = f"autograder-{os.getpid()}-{next(_cgroup_names)}"
        for controller, values in settings.items():
            parent = own_cgroup_v1(controller)
            if parent is None:
                continue
            remove_stale_cgroups(parent)
            folder = parent / name
            try:
                folder.mkdir()
            except OSError:
                continue
            self.folders.append(folder)
            self.controllers.append(controller)
            for file, value in values:
                try:
                    (folder / file).write_text(str(value))
                except OSError:
                    if file != "memory.memsw.limit_in_bytes":  # absent without swap accounting
                        self.remove()
                        self.folders, self.controllers = [], []
                        return

    def join(self):
        """Move the calling process into the groups (runs between fork and exec)."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text("0")

    def processes(self):
        pids = set()
        for folder in self.folders:
            try:
                pids.update(int(pid) for pid in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return pids

    def kill_all(self):
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def remove(self, timeout=30.0):
        """Remove the groups once every process in them is gone. Killed processes take a
        moment to exit: a hundred that imported torch take a second or two."""
        deadline = time.monotonic() + timeout
        for folder in self.folders:
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for remove_stale_cgroups of a later run
                    self.kill_all()
                    time.sleep(0.05)


@functools.cache
def remove_stale_cgroups(parent):
    """Remove empty groups left by grader processes that were killed before cleaning up."""
    for folder in parent.glob("autograder-*-*"):
        owner = folder.name.split("-")[1]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            try:
                folder.rmdir()  # fails, harmlessly, while a process is still inside
            except OSError:
                pass


@functools.cache
def cgroups_in_force():
    """The controllers that cap each student process here (empty where cgroups can't be created)."""
    probe = Cgroups(Limits())
    probe.remove()
    return tuple(probe.controllers)


# what a signal that ended the student's process means, for the student
SIGNAL_REASONS = {
    signal.SIGXCPU: "it used more than its CPU time limit",
    signal.SIGXFSZ: f"it printed more than {OUTPUT_LIMIT // 2**20} MiB of output",
    signal.SIGSEGV: "it crashed (segmentation fault)",
    signal.SIGBUS: "it crashed (bus error)",
    signal.SIGABRT: "it aborted",
    signal.SIGKILL: "it was killed (out of memory, or stopped by the grader)",
}


def ending_signal(returncode):
    """The signal that ended the student's process, if one did. bubblewrap reports a
    child killed by signal N as exit status 128 + N, as shells do."""
    if returncode < 0:
        return signal.Signals(-returncode)
    if bubblewrap_works() and returncode > 128 and returncode - 128 in signal.valid_signals():
        return signal.Signals(returncode - 128)
    return None


@functools.cache
def bubblewrap_works():
    """Whether bwrap is installed and can create its namespaces here."""
    if shutil.which("bwrap") is None:
        return False
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--uid", str(NOBODY), "--ro-bind", "/", "/", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@functools.cache
def nobody_can_run_python():
    """Whether uid 65534 can start this Python (not if it lives under a private /root)."""
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(
        [sys.executable, "-I", "-c", "import torch"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def isolation_in_force():
    """A line for the results saying how student code was isolated."""
    caps = {"pids": "processes", "cpu": "CPU share", "memory": "memory"}
    controllers = cgroups_in_force()
    cgroups = f" and cgroups ({', '.join(caps[c] for c in controllers)})" if controllers else ""
    if bubblewrap_works():
        return f"bubblewrap sandbox (uid 65534, no network, own pid and mount namespaces) with rlimits{cgroups}"
    if nobody_can_run_python():
        return f"rlimits{cgroups} and uid 65534 (bubblewrap unavailable)"
    return f"rlimits{cgroups} only (bubblewrap unavailable, and uid 65534 cannot run this Python)"


def read_only_system_binds():
    """bwrap arguments that show the system and the Python installation, read-only."""
    args = []
    for top in ("/usr", "/bin", "/lib", "/lib64", "/sbin"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.exists():
            args += ["--ro-bind", top, top]
    if Path("/etc/fonts").is_dir():  # matplotlib, imported by many notebooks, looks for fonts here
        args += ["--ro-bind", "/etc/fonts", "/etc/fonts"]
    pythons = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for prefix in sorted(pythons):
        if not prefix.startswith("/usr/"):
            args += ["--ro-bind", prefix, prefix]
    return args


def gpu_binds():
    """The NVIDIA device files and driver state, for --device cuda."""
    args = []
    for device in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(device), str(device)]
    for path in ("/proc/driver/nvidia", "/sys"):
        if Path(path).exists():
            args += ["--ro-bind", path, path]
    return args


def bubblewrap_command(script, scratch_bytes, gpu):
    inside_script = "/grader/" + Path(script).name
    return [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        *read_only_system_binds(),
        "--ro-bind",
        str(script),
        inside_script,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *(gpu_binds() if gpu else []),
        "--size",
        str(scratch_bytes),
        "--tmpfs",
        SCRATCH,
        "--chdir",
        SCRATCH,
        "--clearenv",
        "--setenv",
        "HOME",
        SCRATCH,
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "OMP_NUM_THREADS",
        "1",
        "--setenv",
        "MPLBACKEND",
        "Agg",
        sys.executable,
        "-I",
        inside_script,
    ]


def launch(script, log, scratch, gpu=False, limits=None):
    """Start the student process; returns (process, fd to write requests, fd to read replies).
    ``process.cgroups`` holds its control groups, for ``kill_everything``."""
    limits = limits or Limits(address_space=None if gpu else Limits.address_space)
    cgroups = Cgroups(limits)

    def limit_child():
        limits.apply()
        cgroups.join()

    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    fd_args = [str(to_child_r), str(from_child_w)]
    extra = {}
    if bubblewrap_works():
        command = bubblewrap_command(script, limits.scratch_bytes, gpu) + fd_args
    else:
        # a private copy of the script in the scratch folder, which the child may read
        local_script = Path(scratch) / Path(script).name
        shutil.copy(script, local_script)
        command = [sys.executable, "-I", str(local_script), *fd_args]
        if nobody_can_run_python():
            os.chown(scratch, NOBODY, NOBODY)
            extra = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=scratch,
        pass_fds=(to_child_r, from_child_w),
        start_new_session=True,
        preexec_fn=limit_child,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        **extra,
    )
    process.cgroups = cgroups
    os.close(to_child_r)
    os.close(from_child_w)
    return process, to_child_w, from_child_r


def kill_everything(process):
    """Kill the student's process and everything it started.

    Under bubblewrap, killing the launcher ends its pid namespace, and with it every
    process inside. Every process in the child's cgroups is killed too. Without
    either, the child's session is killed, and processes left running under the
    sandbox uid (a daemon that left the session) are hunted down.
    """
    cgroups = getattr(process, "cgroups", None)
    if cgroups is not None:
        cgroups.kill_all()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    if cgroups is not None:
        cgroups.remove()
    if not bubblewrap_works() and not cgroups_in_force() and nobody_can_run_python():
        for pid in processes_of_uid(NOBODY):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def processes_of_uid(uid):
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        real_uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), None)
        if real_uid == str(uid):
            pids.append(int(entry.name))
    return pids
