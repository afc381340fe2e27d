from typing import Dict, Union

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS


# The Runner looks model wrappers up in mmengine's root registry, not in
# mmpretrain's: registering there is what makes `type=` in a config work.
@MODEL_WRAPPERS.register_module()
class AugSubDistributedDataParallel(MMDistributedDataParallel):
    """DDP wrapper that runs the AugSub training step.

    ``MMDistributedDataParallel.train_step`` does its own forward and update
    and never calls the module's ``train_step``; this wrapper hands the step
    to :meth:`AugSubClassifier.augsub_train_step`, passing itself so that
    both branches run through DDP (main pass under ``no_sync``, sub pass
    synced: one all-reduce of the summed gradient per iteration).

    Set it with ``model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')``.
    Options of ``DistributedDataParallel`` (``find_unused_parameters``,
    ``broadcast_buffers``, ...) go inside that dict: mmengine ignores the
    top-level ``find_unused_parameters`` once a wrapper config is given.
    On a CPU-only machine (gloo), ``device_ids`` is dropped, as DDP requires.
    ``static_graph=True`` is refused with the default two_pass step (its
    main pass runs under ``no_sync``); ``compile`` in the config compiles
    the forward of both passes (see
    :meth:`AugSubClassifier.augsub_train_step`); ``detect_anomalous_params``
    checks the parameters of both passes.

    Args:
        module (AugSubClassifier): The model to wrap.
        detect_anomalous_params (bool): See MMDistributedDataParallel.
        **kwargs: Arguments of ``torch.nn.parallel.DistributedDataParallel``.
    """

    def __init__(self, module, detect_anomalous_params: bool = False,
                 **kwargs):
        if not hasattr(module, 'augsub_train_step'):
            raise TypeError(
                'AugSubDistributedDataParallel wraps an AugSubClassifier, got '
                f'{type(module).__name__}; use MMDistributedDataParallel (the '
                'default) for other models.')
        if kwargs.get('static_graph') and \
                getattr(module, 'step_mode', None) == 'two_pass':
            # DDP's static graph expects one synced forward/backward of the
            # same graph per iteration; the main pass runs under no_sync.
            raise ValueError(
                "AugSub's two_pass step runs its main pass under DDP's "
                'no_sync, which static_graph=True does not support (PyTorch '
                'loses or asserts on the all-reduce). Remove static_graph '
                "from model_wrapper_cfg, or set step_mode='joint' in the "
                'model (one backward over both passes; more memory).')
        if next(module.parameters()).device.type == 'cpu':
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        kwargs.setdefault('broadcast_buffers', False)  # mmengine's default
        super().__init__(
            module=module,
            detect_anomalous_params=detect_anomalous_params,
            **kwargs)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        return self.module.augsub_train_step(self, data, optim_wrapper)
