from typing import Optional

from mmengine._strategy import DDPStrategy, SingleDeviceStrategy
from mmengine.registry import STRATEGIES

DDP_WRAPPER = 'AugSubDistributedDataParallel'


def wants_compile(compile) -> bool:
    """Whether a strategy's ``compile`` argument asks for torch.compile, as
    mmengine reads it (``False``/None: no; ``True`` or any dict: yes)."""
    return compile is not None and compile is not False


class CountsIterations:
    """Strategy mixin: the optimizer wrapper counts iterations from the
    run's iteration, as under the default Runner.

    mmengine's Runner calls ``optim_wrapper.initialize_count_status(model,
    iter, max_iters)`` after building (and after resuming); FlexibleRunner
    never does. The count then restarts at 0 after ``--resume``, so the
    AugSub step draws the sub-model's masks of iteration 0 again (its seed
    is a function of this count), and gradient accumulation neither knows
    where its windows are nor how long the last one is. This mixin makes
    that call at the end of ``prepare`` (iteration 0) and of ``resume`` (the
    checkpoint's iteration).
    """

    def prepare(self, model, **kwargs):
        already = self._prepared
        components = super().prepare(model, **kwargs)
        if not already:
            self._initialize_count(0)
        return components

    def resume(self, filename: str, **kwargs) -> dict:
        checkpoint = super().resume(filename, **kwargs)
        self._initialize_count(checkpoint['meta']['iter'])
        return checkpoint

    def _initialize_count(self, iteration: int) -> None:
        optim_wrapper = getattr(self, 'optim_wrapper', None)
        max_iters = self.dispatch_kwargs.get('max_iters')
        if max_iters is not None and \
                hasattr(optim_wrapper, 'initialize_count_status'):
            optim_wrapper.initialize_count_status(self.model, iteration,
                                                  max_iters)


@STRATEGIES.register_module()
class AugSubSingleDeviceStrategy(CountsIterations, SingleDeviceStrategy):
    """mmengine's ``SingleDeviceStrategy``, counting iterations as the
    Runner does (see :class:`CountsIterations`): FlexibleRunner on one
    device with an AugSub model.

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_.
    """


@STRATEGIES.register_module()
class AugSubDDPStrategy(CountsIterations, DDPStrategy):
    """mmengine's ``DDPStrategy`` with the AugSub DDP wrapper, counting
    iterations as the Runner does (see :class:`CountsIterations`).

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. ``model_wrapper`` defaults to
    ``AugSubDistributedDataParallel`` (mmengine's DDP wrapper runs its own
    step and would skip the sub-model); DDP options go inside it.

    Args:
        model_wrapper (dict, optional): The DDP wrapper config; ``type``
            defaults to ``'AugSubDistributedDataParallel'``.
        **kwargs: The other arguments of ``DDPStrategy`` (``sync_bn``, ...).

    Examples:
        >>> strategy = dict(type='AugSubDDPStrategy',
        ...                 model_wrapper=dict(find_unused_parameters=True))
    """

    def __init__(self, *, model_wrapper: Optional[dict] = None, **kwargs):
        model_wrapper = dict(model_wrapper or {})
        model_wrapper.setdefault('type', DDP_WRAPPER)
        # mmengine's default for its own wrapper, kept for ours.
        model_wrapper.setdefault('broadcast_buffers', False)
        super().__init__(model_wrapper=model_wrapper, **kwargs)
