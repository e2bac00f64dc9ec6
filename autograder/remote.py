"""The trusted side's handle on a student's code running in another process.

``Submission`` starts ``student_process.py`` in a child process, sends it the
submission's code, and exposes the student's top-level names as ``RemoteRef``
proxies: calling or reading attributes of a proxy runs in the child, and what comes
back is plain data (tensors, numbers, shapes) or another proxy. Hidden tests use
these proxies as if they were the student's objects; their expected values never
leave this process.
"""

import io
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from . import sandbox

CHILD_SCRIPT = Path(__file__).with_name("student_process.py")
# the first request also waits for the child to import torch, which a busy machine slows down
STARTUP_TIMEOUT_S = 60
# after this many calls that hit the time limit, or this many crashes, the remaining tests are not run
MAX_HANGS = 2
MAX_CRASHES = 5
MAX_REPLY_BYTES = 256 * 2**20


class StudentError(Exception):
    """The student's code raised an exception (shown to the student: it is theirs)."""

    def __init__(self, type_name, message, student_traceback=""):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.student_traceback = student_traceback


class StudentCrash(Exception):
    """The student's process died, hung or sent something unreadable."""


class RemoteRef:
    """A proxy for an object that lives in the student's process."""

    __slots__ = ("_submission", "_ref", "_type")

    def __init__(self, submission, ref, type_name):
        object.__setattr__(self, "_submission", submission)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._submission.request({"op": "getattr", "target": self._wire(), "name": name})

    def __call__(self, *args, **kwargs):
        return self._submission.request({"op": "call", "target": self._wire(), "args": args, "kwargs": kwargs})

    def __repr__(self):
        return f"<remote {self._type}>"

    def _wire(self):
        return {"__ref__": self._ref}


class Submission:
    """One student's code, running in its own child process.

    The child is started lazily and restarted (with the same code) after it dies,
    so one crashing test costs that test only.
    """

    def __init__(self, chunks, timeout=20.0, gpu=False):
        self.chunks = chunks
        self.timeout = timeout
        self.gpu = gpu
        self.hangs = 0
        self.crashes = 0
        self.load_failure = None
        self.process = None
        self.loaded = False
        self.load_problems = []
        self.log = tempfile.TemporaryFile()
        self.scratch = tempfile.TemporaryDirectory(prefix="submission-")

    # -- process management ----------------------------------------------------
    def start(self):
        """Launch the child; it imports torch while the caller goes on."""
        self.process, self._to_child, self._from_child = sandbox.launch(
            CHILD_SCRIPT, self.log, self.scratch.name, gpu=self.gpu
        )
        self.loaded = False

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def close(self):
        if self.process is None:
            return
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        sandbox.kill_everything(self.process)
        self.process = None

    def shutdown(self):
        """Stop the child for good and remove its scratch folder."""
        self.close()
        self.scratch.cleanup()

    def output_tail(self, limit=2000):
        """The end of what the student's code printed (stdout and stderr)."""
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - limit))
        return self.log.read().decode("utf-8", "replace")

    # -- requests ------------------------------------------------------------------
    def request(self, message):
        if self.load_failure:
            raise StudentCrash(self.load_failure)
        if self.hangs >= MAX_HANGS:
            raise StudentCrash(f"not run: your code already hit the time limit in {self.hangs} earlier calls")
        if self.crashes >= MAX_CRASHES:
            raise StudentCrash(f"not run: your code's process already failed {self.crashes} times")
        if not self.alive():
            self.close()
            self.start()
        if not self.loaded:
            try:
                self.load_problems = self._roundtrip({"op": "load", "chunks": self.chunks}, STARTUP_TIMEOUT_S)
            except StudentCrash as exc:
                self.load_failure = f"while your notebook's definitions were being loaded: {exc}"
                raise StudentCrash(self.load_failure) from None
            self.loaded = True
        return self._roundtrip(message, self.timeout)

    def _roundtrip(self, message, timeout):
        buffer = io.BytesIO()
        torch.save(message, buffer)
        payload = buffer.getvalue()
        try:
            os.write(self._to_child, len(payload).to_bytes(8, "big"))
            view = memoryview(payload)
            while view:
                view = view[os.write(self._to_child, view) :]
            reply = self._read_reply(timeout)
        except (OSError, StudentCrash) as exc:
            reason = self._death_reason(exc)
            self.close()
            self.crashes += 1
            raise StudentCrash(reason) from None
        if "error" in reply:
            error = reply["error"]
            raise StudentError(error["type"], error["message"], error["traceback"])
        return self._decode(reply["ok"])

    def _read_reply(self, timeout):
        deadline = time.monotonic() + timeout
        header = self._read_exact(8, deadline)
        size = int.from_bytes(header, "big")
        if size > MAX_REPLY_BYTES:
            raise StudentCrash(f"your code returned more than {MAX_REPLY_BYTES // 2**20} MiB of data")
        payload = self._read_exact(size, deadline)
        try:
            return torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as exc:
            raise StudentCrash(f"your code returned something that is not plain data ({type(exc).__name__})") from None

    def _read_exact(self, size, deadline):
        data = bytearray()
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.hangs += 1
                raise StudentCrash("your code did not answer in time (an endless loop, or far too slow?)")
            ready, _, _ = select.select([self._from_child], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_child, min(size - len(data), 1 << 20))
            if not chunk:
                raise StudentCrash("process ended")
            data += chunk
        return bytes(data)

    def _death_reason(self, exc):
        if isinstance(exc, StudentCrash) and "process ended" not in str(exc):
            return str(exc)
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "your code stopped answering"
        signal_number = sandbox.ending_signal(code)
        if signal_number is not None:
            return f"your code's process ended: {sandbox.SIGNAL_REASONS.get(signal_number, signal_number.name)}"
        return f"your code ended its own process (exit status {code}); don't call sys.exit() or os._exit()"

    def _decode(self, value):
        if isinstance(value, dict):
            if "__ref__" in value:
                return RemoteRef(self, value["__ref__"], value.get("type", "object"))
            return {k: self._decode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._decode(v) for v in value)
        return value

    def probe(self, name, target, *args, options=None, **kwargs):
        """Run one of the child's measuring instruments on a student callable."""
        return self.request(
            {
                "op": "probe",
                "name": name,
                "target": target._wire(),
                "args": args,
                "kwargs": kwargs,
                "options": options or {},
            }
        )
