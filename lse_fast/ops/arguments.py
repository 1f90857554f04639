"""Conversion of the Python wrappers' arguments into the ops' schema
arguments (a Python value of the wrong kind is a TypeError naming it).
Conversion only: every check of values, shapes and dtypes is the op's own,
written once in C++ (csrc/torch/<op>_op.h) and run by its eager and Meta
kernels alike."""

import torch

MODES = {"bilinear": 0, "nearest": 1}
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2, "mean_all": 3}


def require_tensor(op, name, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"lse_fast.{op}: `{name}` must be a torch.Tensor, got {type(value).__name__}")


def require_bool(op, name, value):
    if not isinstance(value, bool):
        raise TypeError(f"lse_fast.{op}: `{name}` must be a bool, got {value!r}")


def require_int(op, name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"lse_fast.{op}: `{name}` must be an int, got {value!r}")


def size_list(op, name, size):
    """(height, width) as a list of two ints; values are checked by the op."""
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"lse_fast.{op}: `{name}` must be (height, width) as two ints, got {size!r}")
    return [int(size[0]), int(size[1])]


def _code(op, name, value, codes):
    if value not in codes:
        choices = " or ".join(repr(k) for k in codes) if len(codes) == 2 else f"one of {sorted(codes)}"
        raise RuntimeError(f"lse_fast.{op}: `{name}` must be {choices}, got {value!r}")
    return codes[value]


def mode_code(op, mode):
    """The op's code of a resampling mode name."""
    return _code(op, "mode", mode, MODES)


def reduction_code(reduction):
    """The op's code of a reduction name."""
    return _code("focal_ce_loss", "reduction", reduction, REDUCTIONS)
