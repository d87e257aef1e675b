"""Helpers shared by the torch fast paths."""

import functools
import time
import warnings

import torch
from keras.src.backend.common.stateless_scope import in_stateless_scope

from keras_batchopt.src import config

# Left to itself, Inductor decides once per graph whether a CPU loop runs on
# several threads, from the size of the first tensor it compiles for, and
# caches that choice on disk; with one dynamic-shape graph for every
# variable, a small first variable would make every later kernel
# single-threaded, and the speed of a run would depend on which model
# compiled the kernel first. With dynamic threads the loop is always an
# OpenMP region whose team OpenMP sizes at run time.
_OPTIONS = {"cpp.dynamic_threads": True}


class CompiledKernel:
    """An element-wise torch kernel, compiled once on first use.

    `get(True)` returns a callable that runs the kernel compiled by
    `torch.compile(dynamic=True, fullgraph=True)`: every argument that
    changes between steps must be a tensor, so one graph serves all
    variables and steps. Kernels take their tensors positionally and their
    0-d scalars as keyword-only arguments (named, not matched by
    position); the keywords must be the same at every call. If compilation
    fails (no C++ compiler on a CPU machine, no Triton on a GPU one), it
    warns once and runs the same kernel eagerly from then on. `get(False)`
    returns the eager kernel.
    """

    def __init__(self, fn, name):
        self._fn = fn
        self._name = name
        self._compiled = None
        self._failed = False

    def get(self, use_compile):
        if not use_compile or self._failed:
            return self._fn
        if self._compiled is None:
            self._compiled = torch.compile(
                self._fn, dynamic=True, fullgraph=True, options=_OPTIONS
            )
        return self._call_compiled

    def _call_compiled(self, *args, **kwargs):
        try:
            return self._compiled(*args, **kwargs)
        except Exception as error:  # compilation failed: run eagerly
            self._failed = True
            warnings.warn(
                f"keras_batchopt: compiling the torch {self._name} kernel "
                f"failed ({type(error).__name__}: {error}); the kernel now "
                "runs eagerly, which is slower. Call keras_batchopt.config."
                "set_torch_compile(False) to skip the attempt.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self._fn(*args, **kwargs)


def compile_now(optimizer, numel=None):
    """Whether `optimizer`'s fast-path update runs a compiled kernel now.

    `config.torch_compile_mode()` decides: "always", "never", or "auto":
    compiled once the optimizer's eager updates have taken
    `config.TORCH_COMPILE_AFTER_SECONDS` in total (see `eager_timed`), and
    then only for variables of more than `GROUP_MAX_NUMEL` elements
    (`numel`): below that, one compiled call costs more than the eager
    kernel it replaces, so small variables stay eager for good.
    """
    mode = config.torch_compile_mode()
    if mode != "auto":
        return mode == "always"
    if numel is not None and numel <= GROUP_MAX_NUMEL:
        return False
    spent = getattr(optimizer, "_torch_eager_update_seconds", 0.0)
    return spent >= config.TORCH_COMPILE_AFTER_SECONDS


def eager_timed(update_step):
    """Decorates a fast path's `update_step(optimizer, ...)`: the wall time
    of each update that runs eagerly is added to the optimizer's total,
    which `compile_now` reads. On CUDA this is the host time of the step
    (kernel launches are asynchronous), which is what compiling saves on
    small, launch-bound steps."""

    @functools.wraps(update_step)
    def timed_update_step(optimizer, *args, **kwargs):
        if compile_now(optimizer):
            return update_step(optimizer, *args, **kwargs)
        start = time.perf_counter()
        result = update_step(optimizer, *args, **kwargs)
        spent = getattr(optimizer, "_torch_eager_update_seconds", 0.0)
        optimizer._torch_eager_update_seconds = (
            spent + time.perf_counter() - start
        )
        return result

    return timed_update_step


# Variables with at most this many elements are updated together, by
# multi-tensor `torch._foreach_*` operations, instead of by one compiled call
# each: a compiled call's Python and guard overhead dominates for small
# tensors (biases, normalization scales). Tests set it to -1 or a huge value to
# exercise one route alone.
GROUP_MAX_NUMEL = 32768


def split_by_size(variables, values, grads):
    """Splits the step's tensors into small ones, grouped, and large ones.

    Returns `(groups, large)`: `groups` maps a dtype to a list of
    `(variable, value, grad)` triples with at most `GROUP_MAX_NUMEL`
    elements each; `large` lists the other triples.
    """
    groups = {}
    large = []
    for triple in zip(variables, values, grads):
        if triple[1].numel() <= GROUP_MAX_NUMEL:
            groups.setdefault(triple[1].dtype, []).append(triple)
        else:
            large.append(triple)
    return groups, large


def plain_in_place_update_possible(grads, variables):
    """True when every gradient can be consumed by an in-place kernel.

    That is: not inside a stateless scope (where variables must not be
    mutated), and each gradient is a dense, contiguous floating tensor with
    its variable's shape, dtype and device.
    """
    if in_stateless_scope() or not variables:
        return False
    for grad, variable in zip(grads, variables):
        value = variable.value
        if not isinstance(grad, torch.Tensor) or grad.layout != torch.strided:
            return False
        if not (grad.is_contiguous() and value.is_contiguous()):
            return False
        if not value.dtype.is_floating_point:
            return False
        if (
            grad.dtype != value.dtype
            or grad.shape != value.shape
            or grad.device != value.device
        ):
            return False
    return True


def can_use(optimizer, grads, variables):
    """The `can_use` of every in-place torch fast path: dense, contiguous
    torch tensors that match their variable's dtype, outside a stateless
    scope (see `plain_in_place_update_possible`)."""
    return plain_in_place_update_possible(grads, variables)


def global_norm_clip_factor(grads, max_norm, epsilon):
    """Torch twin of `ops.clipping.global_norm_clip_factor`, without temps."""
    norms = torch._foreach_norm([g.float() for g in grads])
    norm = torch.linalg.vector_norm(torch.stack(norms))
    return torch.clamp(max_norm / (norm + epsilon), max=1.0)


def l2_norm(x):
    """`ops.trust_ratio.l2_norm` in plain torch (float32 sum of squares)."""
    return x.float().square().sum().sqrt()


def flat(tensor):
    """A 1-D alias of a contiguous tensor's memory, for in-place kernels.

    `view(-1)` alone would make a view, and `torch.compile` guards on the
    shape of a view's base, which would compile one graph per shape; the
    detached alias has no base, so one dynamic-shape graph serves all.
    """
    return tensor.view(-1).detach()


def scalars(values, dtype, device):
    """0-d tensors of `values`, made with one host-to-device copy.

    Detached, so that none is a view: `torch.compile` guards on the sizes
    of a view's base and would recompile when they change.
    """
    packed = torch.tensor(values, dtype=dtype, device=device)
    return [x.detach() for x in packed.unbind()]
