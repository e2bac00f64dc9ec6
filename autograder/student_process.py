"""The untrusted side of grading: runs one student's code and answers requests.

This file is executed as a script in a child process (``python -I student_process.py
IN_FD OUT_FD``). It imports nothing from the ``autograder`` package, so it can be
copied into a sandbox on its own: it never sees the hidden tests, the expected values
or the scoring. The trusted side (``autograder.remote``) sends requests; this side
returns raw results only: tensors, shapes, numbers, measured bytes, exceptions.

Wire format, both ways: an 8-byte big-endian length, then a ``torch.save`` payload.
The trusted side loads replies with ``torch.load(weights_only=True)``, which can
only rebuild tensors and plain containers, so a reply cannot run code over there.
Objects that are not plain data (modules, functions) stay here in a handle table
and travel as ``{"__ref__": id}``.
"""

import io
import os
import sys
import traceback
import types

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

PLAIN_SCALARS = (bool, int, float, str, type(None), torch.dtype, torch.device)


class Handles:
    """Objects the trusted side refers to by number."""

    def __init__(self):
        self.objects = {}

    def encode(self, value):
        """Turn a result into plain data, keeping anything else here as a reference."""
        if isinstance(value, torch.Tensor):
            return value.detach()
        if isinstance(value, PLAIN_SCALARS) or isinstance(value, torch.Size):
            return value
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, tuple):  # named tuples too (load_state_dict's result)
            return tuple(self.encode(v) for v in value)
        if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
            return {k: self.encode(v) for k, v in value.items()}
        if isinstance(value, types.GeneratorType):
            return [self.encode(v) for v in value]
        ref = len(self.objects) + 1
        self.objects[ref] = value
        return {"__ref__": ref, "type": type(value).__qualname__}

    def decode(self, value):
        if isinstance(value, dict):
            if "__ref__" in value:
                return self.objects[value["__ref__"]]
            return {k: self.decode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.decode(v) for v in value)
        return value


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated while active, on any device (meta too).

    Each op's outputs are recorded by storage; a storage counts until it is freed.
    Tensors that existed before entering are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage._cdata not in self.live:
                    self.live[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        self.peak = max(self.peak, self.current)
        return out


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched while active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def first_tensor(value):
    return next(t for t in tree_leaves(value) if isinstance(t, torch.Tensor))


def probe_peak_memory(fn, args, kwargs, backward=True):
    """Peak bytes allocated by ``fn(*args, **kwargs)`` and, optionally, its backward pass."""
    with PeakMemory() as tracker:
        out = fn(*args, **kwargs)
        if backward:
            first_tensor(out).sum().backward()
        del out
    return tracker.peak


def probe_count_ops(fn, args, kwargs):
    with torch.no_grad(), OpCounter() as counter:
        fn(*args, **kwargs)
    return counter.count


def probe_gradients(fn, args, kwargs):
    """Run forward + backward of sum(output); return the gradients that reached
    each parameter of ``fn`` (when it is a module) and each input tensor."""
    params = dict(fn.named_parameters()) if isinstance(fn, torch.nn.Module) else {}
    for p in params.values():
        p.grad = None
    first_tensor(fn(*args, **kwargs)).float().sum().backward()
    inputs = [a.grad if isinstance(a, torch.Tensor) else None for a in args]
    return {"params": {name: p.grad for name, p in params.items()}, "inputs": inputs}


PROBES = {
    "peak_memory": probe_peak_memory,
    "count_ops": probe_count_ops,
    "gradients": probe_gradients,
}


def load_code(namespace, chunks):
    """Execute the submission's kept statements one by one; a failing statement
    (say, ``import google.colab``) is reported and does not stop the others."""
    problems = []
    for label, source in chunks:
        try:
            exec(compile(source, label, "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - anything the student's code raises
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
    return problems


def student_traceback(exc):
    """The traceback frames that belong to the student's code, not to this file."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return "".join(traceback.format_list(frames[-5:]))


def serve(read_fd, write_fd):
    inbox = os.fdopen(read_fd, "rb", buffering=0)
    outbox = os.fdopen(write_fd, "wb", buffering=0)
    handles = Handles()
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}

    def read_exact(n):
        data = b""
        while len(data) < n:
            chunk = inbox.read(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    while True:
        try:
            size = int.from_bytes(read_exact(8), "big")
        except EOFError:
            return
        request = torch.load(io.BytesIO(read_exact(size)), weights_only=True)
        try:
            reply = {"ok": handles.encode(handle_request(request, handles, namespace))}
        except BaseException as exc:  # noqa: BLE001 - reported to the trusted side
            if isinstance(exc, KeyboardInterrupt):
                raise
            reply = {
                "error": {
                    "type": type(exc).__name__,
                    "message": str(exc)[:2000],
                    "traceback": student_traceback(exc)[-4000:],
                }
            }
        buffer = io.BytesIO()
        try:
            torch.save(reply, buffer)
        except Exception as exc:  # noqa: BLE001 - an unsaveable result is the student's
            buffer = io.BytesIO()
            torch.save({"error": {"type": "UnsupportedResult", "message": str(exc)[:500], "traceback": ""}}, buffer)
        payload = buffer.getvalue()
        outbox.write(len(payload).to_bytes(8, "big") + payload)


def handle_request(request, handles, namespace):
    op = request["op"]
    if op == "load":
        torch.manual_seed(0)
        return load_code(namespace, request["chunks"])
    if op == "global":
        name = request["name"]
        if name not in namespace:
            raise NameError(f"`{name}` is not defined in your notebook")
        return namespace[name]
    target = handles.decode(request["target"])
    args = handles.decode(request.get("args", []))
    kwargs = handles.decode(request.get("kwargs", {}))
    if op == "getattr":
        return getattr(target, request["name"])
    if op == "call":
        return target(*args, **kwargs)
    if op == "probe":
        return PROBES[request["name"]](target, args, kwargs, **request.get("options", {}))
    raise ValueError(f"unknown request {op!r}")


if __name__ == "__main__":
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    sys.argv = ["submission"]
    serve(read_fd, write_fd)
