from contextlib import nullcontext
from typing import ContextManager, Dict, Union

import torch
from mmengine._strategy.deepspeed import (DeepSpeedOptimWrapper,
                                          DeepSpeedStrategy,
                                          MMDeepSpeedEngineWrapper)
from mmengine.registry import MODEL_WRAPPERS, STRATEGIES

from .base import CountsIterations, wants_compile


class DeepSpeedStepOptimWrapper:
    """What the AugSub step asks of an optimizer wrapper, over a DeepSpeed
    engine.

    ``DeepSpeedOptimWrapper`` has no ``optim_context``, ``scale_loss`` or
    iteration count, and DeepSpeed's ZeRO optimizers keep only the gradient
    of the last backward of a micro-step (measured with DeepSpeed 0.19.8,
    ZeRO-1: the main pass's gradient was lost). So every backward here ends
    a micro-step of its own (``engine.step()``), and
    :class:`AugSubDeepSpeedStrategy` gives the engine ``passes`` times the
    configured ``gradient_accumulation_steps``: the engine accumulates the
    passes of one iteration, and of the accumulated iterations, and updates
    once at the boundary. Losses are divided by the configured accumulation
    steps here (the engine would divide by its doubled count). No context
    (the engine runs fp16/bf16 itself); the fp16 loss scale is the engine's.
    ``_inner_count`` counts iterations (the step's sub-pass seed depends on
    it).

    Args:
        engine (deepspeed.DeepSpeedEngine): The engine.
        count (int): The iteration count at the start of the step.
        passes (int): Backward passes per iteration (2 for the two-pass
            step, 1 for the joint one).
    """

    def __init__(self, engine, count: int, passes: int):
        self.engine = engine
        self._inner_count = count
        self.accumulation = engine.gradient_accumulation_steps() // passes

    def optim_context(self, model) -> ContextManager:
        return nullcontext()

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        self.engine.backward(
            loss / self.accumulation, scale_wrt_gas=False, **kwargs)
        self.engine.step()
        self._inner_count += 1

    def update_params(self, loss: torch.Tensor, **kwargs) -> None:
        self.backward(loss, **kwargs)


def passes_per_iteration(model: torch.nn.Module) -> int:
    """Backward passes of one AugSub iteration of ``model``."""
    return 2 if getattr(model, 'step_mode', 'two_pass') == 'two_pass' else 1


@MODEL_WRAPPERS.register_module()
class AugSubDeepSpeedEngineWrapper(MMDeepSpeedEngineWrapper):
    """mmengine's DeepSpeed engine wrapper, running the AugSub step.

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. Both passes run through the engine,
    each as a micro-step of its own (see :class:`DeepSpeedStepOptimWrapper`;
    the engine's ``no_sync``, refused under ZeRO-2/3, is not used), and the
    engine updates once per iteration. Inputs listed in ``inputs_to_half``
    are cast to the engine's dtype, as mmengine's wrapper does. Built by
    :class:`AugSubDeepSpeedStrategy`.

    Args:
        model (deepspeed.DeepSpeedEngine): The engine around the
            ``AugSubClassifier``.
        inputs_to_half (list, optional): See ``MMDeepSpeedEngineWrapper``.
    """

    def __init__(self, *, model, inputs_to_half=None):
        if not hasattr(model.module, 'augsub_train_step'):
            raise TypeError(
                'AugSubDeepSpeedEngineWrapper wraps an AugSubClassifier, got '
                f'{type(model.module).__name__}; use DeepSpeedStrategy (the '
                'default) for other models.')
        super().__init__(model=model, inputs_to_half=inputs_to_half)
        self.iteration = 0
        self.passes = passes_per_iteration(model.module)

    def __call__(self, inputs: torch.Tensor, *args, **kwargs):
        if self._inputs_to_half is not None and (
                'inputs' in self._inputs_to_half
                or 0 in self._inputs_to_half):
            dtype = next(self.model.parameters()).dtype
            inputs = inputs.to(dtype)
        return self.model(inputs, *args, **kwargs)

    def augsub_main_pass_context(self) -> ContextManager:
        return nullcontext()

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: DeepSpeedOptimWrapper
                   ) -> Dict[str, torch.Tensor]:
        # optim_wrapper (DeepSpeedOptimWrapper) steps the same engine.
        step_optim = DeepSpeedStepOptimWrapper(self.model, self.iteration,
                                               self.passes)
        log_vars = self.model.module.augsub_train_step(self, data, step_optim)
        self.iteration = step_optim._inner_count
        return log_vars


@STRATEGIES.register_module()
class AugSubDeepSpeedStrategy(CountsIterations, DeepSpeedStrategy):
    """mmengine's ``DeepSpeedStrategy`` for AugSub models.

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. ``DeepSpeedStrategy`` always wraps
    the engine in ``MMDeepSpeedEngineWrapper``, whose step would skip the
    sub-model; this one builds :class:`AugSubDeepSpeedEngineWrapper`, gives
    the engine one micro-step per backward pass (``gradient_accumulation_
    steps`` times 2 for the two-pass step: see
    :class:`DeepSpeedStepOptimWrapper`; DeepSpeed's ``train_batch_size``
    bookkeeping doubles with it), and counts iterations from the run's
    iteration, also after ``--resume``.
    Every argument of ``DeepSpeedStrategy`` (``zero_optimization``,
    ``fp16``, ``bf16``, ``inputs_to_half``, ``gradient_clipping``, ...) is
    accepted unchanged.

    mmengine 0.10.7 registers DeepSpeed's own optimizers at the end of
    ``DeepSpeedStrategy.__init__`` from ``deepspeed.runtime.fp16.onebit``,
    which DeepSpeed >= 0.17 no longer has (the whole strategy fails to
    build there); this strategy builds without them: optimizers from torch
    and mmengine's registry (what the model zoo's configs use) work, the
    names ``FusedAdam``, ``OnebitAdam``, ... are then not registered.

    Examples:
        On top of a model-zoo DeepSpeed config:

        >>> strategy = dict(type='AugSubDeepSpeedStrategy')
    """

    def __init__(self, **kwargs):
        try:
            super().__init__(**kwargs)
        except ModuleNotFoundError as error:
            # The last statement of DeepSpeedStrategy.__init__: everything
            # else is set by now.
            if not (error.name or '').startswith('deepspeed.runtime.fp16'):
                raise

    def prepare(self, model, **kwargs):
        if wants_compile(kwargs.get('compile')):
            # mmengine's DeepSpeedStrategy drops it without a word.
            raise ValueError(
                'AugSubDeepSpeedStrategy cannot compile the model: '
                "mmengine's DeepSpeedStrategy ignores `compile` (the step "
                'would run eagerly). Remove `compile` from the config, or '
                "use strategy=dict(type='AugSubDDPStrategy') to compile.")
        return super().prepare(model, **kwargs)

    def _wrap_model(self, model: torch.nn.Module
                    ) -> AugSubDeepSpeedEngineWrapper:
        # FlexibleRunner sets the micro batch size for a strategy named
        # 'DeepSpeedStrategy' only; it also hands it to prepare().
        self.config.setdefault(
            'train_micro_batch_size_per_gpu',
            self.dispatch_kwargs.get('train_micro_batch_size_per_gpu', 1))
        # One micro-step per backward pass (see DeepSpeedStepOptimWrapper).
        self.config['gradient_accumulation_steps'] = self.config.get(
            'gradient_accumulation_steps', 1) * passes_per_iteration(model)
        wrapper = super()._wrap_model(model)
        return AugSubDeepSpeedEngineWrapper(
            model=wrapper.model, inputs_to_half=self._inputs_to_half)

    def _initialize_count(self, iteration: int) -> None:
        if isinstance(getattr(self, 'model', None),
                      AugSubDeepSpeedEngineWrapper):
            self.model.iteration = iteration
