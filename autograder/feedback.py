"""What hidden tests use to judge results and explain failures to students.

A failing check raises ``Feedback`` with a message written for the student; the
plugin shows that message and nothing else of the test (no expected tensors, no
test source).
"""

import math

import torch


class Feedback(AssertionError):
    """A failed check, with a message that is safe and useful to show the student.

    ``diagnosed`` says the message already names the mistake, so the test's generic
    hint would only distract.
    """

    def __init__(self, message, diagnosed=False):
        super().__init__(message)
        self.diagnosed = diagnosed


def expect(condition, message):
    if not condition:
        raise Feedback(message)


# float32 reference math is exact to ~1e-6; half precision keeps ~3 (fp16) or ~2 (bf16) digits
TOLERANCES = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-4},
    torch.float64: {"atol": 1e-8, "rtol": 1e-6},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}


def expect_tensor(actual, what, shape=None, dtype=None, device=None):
    """Check that ``actual`` is a tensor with the given shape, dtype and device."""
    expect(isinstance(actual, torch.Tensor), f"{what} should be a tensor, got {type(actual).__name__}")
    if shape is not None:
        expect(tuple(actual.shape) == tuple(shape), f"{what} has shape {tuple(actual.shape)}, expected {tuple(shape)}")
    if dtype is not None:
        expect(actual.dtype == dtype, f"{what} has dtype {actual.dtype}, expected {dtype} (the input's dtype)")
    if device is not None:
        expect(actual.device.type == torch.device(device).type, f"{what} is on {actual.device}, expected {device}")


def close(actual, expected, dtype=None):
    """Whether ``actual`` matches ``expected`` within the tolerance of ``dtype``."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    tol = TOLERANCES[dtype or actual.dtype]
    return torch.allclose(actual.detach().double().cpu(), expected.detach().double().cpu(), **tol)


def expect_close(actual, expected, what, dtype=None):
    expect_tensor(actual, what, shape=expected.shape)
    if not close(actual, expected, dtype):
        error = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs()
        raise Feedback(f"{what} is wrong: it differs from the correct values by up to {error.max().item():.3g}")


def randn(*shape, device="cpu", dtype=torch.float32, seed=0):
    """Seeded standard-normal inputs: the same numbers on every device and every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)


def loglog_slope(sizes, values):
    """Least-squares slope of log(values) against log(sizes): the exponent p in value ~ size^p."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
