"""Drop-path that skips the computation of the samples it drops.

Drop-path (stochastic depth, `Huang et al. 2016
<https://arxiv.org/abs/1603.09382>`_) zeroes a residual branch for a random
subset of the samples and scales the others by ``1 / keep_prob``. mmcv's
``DropPath`` (and timm's) do it after the branch has been computed for the
whole batch, so a sample that is dropped costs as much as one that is kept.
In AugPath's sub pass (`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_) half of the branches are dropped;
running each branch on its kept samples only and scattering the result back
saves about half of the branch work. The function computed is the same:
same per-sample Bernoulli keep, same ``1 / keep_prob`` scaling, zeros for
the dropped samples.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import drop_path
from torch.autograd import Function
from torch.utils.hooks import RemovableHandle

#: Below this much saved work per call (``drop_prob * x.numel() *
#: x.shape[-1]``, about the multiply-adds of one C x C linear layer on the
#: dropped rows), gathering and scattering rows costs more than it saves and
#: the branch runs on the whole batch. Measured on a 2-core CPU, one thread,
#: small ViTs at drop 0.5: skipping took 1.10x the plain time at 7e4, 0.91x
#: at 2.8e5, 0.66x at 1.1e6 (the sweep in docs/performance.md). Not measured
#: on GPUs, where kernels are much faster and the per-call cost is not.
MIN_SAVED_WORK = 2**18


# Eager under torch.compile: the draw is made from the sub pass's seeded
# stream, as in eager mode (a compiled graph would draw its own numbers), and
# the number of samples kept decides shapes.
@torch.compiler.disable
def draw_kept_samples(batch: int, drop_prob: float) -> torch.Tensor:
    """Draw which samples keep their residual branch.

    Sample ``i`` is kept iff ``floor(keep_prob + u_i) == 1`` with ``u_i``
    uniform in [0, 1): the draw of mmcv's ``drop_path``, so that on the CPU
    the same seed keeps the same samples. The draw is made on the CPU even
    for CUDA inputs: the number of kept samples decides tensor shapes, and
    reading it from the GPU would stall the launch queue once per branch.

    Args:
        batch (int): Number of samples.
        drop_prob (float): Probability that a sample's branch is dropped,
            in [0, 1).

    Returns:
        Tensor: The indices of the kept samples (CPU, int64), possibly none.
    """
    keep = (1 - drop_prob + torch.rand(batch, dtype=torch.float32)).floor_()
    return keep.nonzero().flatten()


def _move_rows(x: torch.Tensor, rows: torch.Tensor,
               batch: Optional[int]) -> torch.Tensor:
    if batch is None:
        return x.index_select(0, rows)
    return x.new_zeros((batch, *x.shape[1:])).index_copy_(0, rows, x)


class _MoveRows(Function):
    """``batch=None``: take ``rows`` of ``x``; else put ``x`` as ``rows`` of a
    batch of ``batch`` zero rows. Each is the other's backward: autograd's
    own backward of ``index_select`` (an ``index_add``) took ~100x longer
    than ``index_copy_`` here for a contiguous (B, N, C) gradient on the
    CPU."""

    @staticmethod
    def forward(ctx, x, rows, batch):
        ctx.save_for_backward(rows)
        ctx.batch = x.shape[0] if batch is None else None
        return _move_rows(x, rows, batch)

    @staticmethod
    def backward(ctx, grad):
        rows, = ctx.saved_tensors
        return _move_rows(grad.contiguous(), rows, ctx.batch), None, None


class _AlwaysOn:
    on = True


class SkippingDropPath:
    """The hooks that run a residual branch as ``drop_path(branch(x))`` on
    its kept samples only (see :func:`skipping_drop_path`).

    Args:
        drop_prob (float): Drop-path probability, in [0, 1).
        min_saved_work (int): See :func:`skipping_drop_path`.
        switch (object): The hooks act while ``switch.on`` is True (the
            sub-model's :class:`~augsub_mm.models.families.SubPassSwitch`).
    """

    def __init__(self, drop_prob: float, min_saved_work: int = 0,
                 switch=_AlwaysOn):
        self.drop_prob = drop_prob
        self.min_saved_work = min_saved_work
        self.switch = switch
        # What gather leaves for scatter, per call (attributes written
        # before they are read: torch.compile does not guard on old values).
        self.skip = None
        self.kept = self.batch = self.none_kept = None

    def install(self, branch: nn.Module) -> List[RemovableHandle]:
        return [branch.register_forward_pre_hook(self.gather),
                branch.register_forward_hook(self.scatter)]

    def gather(self, module, args):
        # Off: the branch runs as in the main pass (no scatter either).
        if not self.switch.on:
            self.skip = None
            return None
        x = args[0]
        drop_prob = self.drop_prob
        # A branch in eval mode (a frozen stage) is not dropped, as mmcv's
        # DropPath in its slot would not be.
        skip = module.training and \
            drop_prob * x.numel() * x.shape[-1] >= self.min_saved_work
        self.skip = skip
        if not skip:
            return None
        kept = draw_kept_samples(x.shape[0], drop_prob)
        # Some kernels reject an empty batch: with no sample kept, the branch
        # still runs on sample 0 and its output is multiplied by 0, which
        # also keeps every parameter in the graph (DDP expects it).
        none_kept = kept.numel() == 0
        if none_kept:
            kept = kept.new_zeros(1)
        kept = kept.to(x.device, non_blocking=True)
        self.batch, self.kept, self.none_kept = x.shape[0], kept, none_kept
        return (_MoveRows.apply(x, kept, None), *args[1:])

    def scatter(self, module, args, out):
        if self.skip is None:
            return None
        if not self.skip:
            return drop_path(out, self.drop_prob, training=module.training)
        # div by keep_prob, as mmcv does: the same rounding.
        out = out * 0. if self.none_kept else out.div(1 - self.drop_prob)
        return _MoveRows.apply(out, self.kept, self.batch)


@contextmanager
def skipping_drop_path(branch: nn.Module,
                       drop_prob: float,
                       min_saved_work: int = 0) -> Iterator[None]:
    """Run ``branch`` as ``drop_path(branch(x))``, computing kept samples only.

    While the context is active, every call of ``branch`` draws the kept
    samples (:func:`draw_kept_samples`), runs on those rows of its first
    positional argument (dimension 0 is the batch; other arguments pass
    unchanged) and returns its output scattered back into a batch of zeros,
    the kept rows multiplied by ``1 / keep_prob``. For the same kept samples
    the output and the gradients are those of mmcv's
    ``drop_path(branch(x), drop_prob, training=True)``, up to float rounding
    of batched kernels. A call that would save less than ``min_saved_work``
    (see :data:`MIN_SAVED_WORK`) runs on the whole batch and applies mmcv's
    ``drop_path`` itself; a call in eval mode (``branch.training`` False,
    e.g. a frozen stage) is not dropped at all. The hooks are removed on
    exit, also on error. (AugPath installs :class:`SkippingDropPath` once,
    driven by its sub-pass switch, instead.)

    Args:
        branch (nn.Module): A residual branch that treats samples
            independently (no batch statistics), without a drop-path of its
            own.
        drop_prob (float): Drop-path probability, in [0, 1).
        min_saved_work (int): Skip only calls that save at least this much
            work, ``drop_prob * x.numel() * x.shape[-1]``. Defaults to 0
            (always skip).

    Examples:
        >>> import torch
        >>> branch = torch.nn.Linear(4, 4)
        >>> with skipping_drop_path(branch, 0.5):
        ...     out = branch(torch.rand(8, 3, 4))
        >>> out.shape  # rows of dropped samples are zero
        torch.Size([8, 3, 4])
    """
    handles = SkippingDropPath(drop_prob, min_saved_work).install(branch)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
