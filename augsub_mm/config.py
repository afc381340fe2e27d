"""Switch AugSub on in any MMPretrain config, and make a config safe to
train with AugSub, without editing config files.

From `Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_. ``tools/train.py --augsub AugMask:0.5``
applies :func:`enable_augsub` to a model-zoo config such as
``mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py``, and always applies
:func:`prepare_augsub_config`; :func:`setup_cpu_dist` lets the tools run
distributed on machines without an accelerator (gloo), and
:func:`close_dist` ends a distributed run cleanly.
"""
import contextlib
import os.path as osp
from typing import Iterator, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.dist import init_dist
from mmengine.registry import MODEL_WRAPPERS
from mmengine.utils import get_installed_path, is_installed
from mmengine.utils.dl_utils import set_multi_processing
from torch.nn.parallel import DistributedDataParallel

from .engine.optimizers import AugSubOptimWrapperConstructor
from .models.classifiers.augsub_hf_classifier import transformers_installed
from .models.classifiers.augsub_timm_classifier import (HF_REFUSAL,
                                                        NO_TRANSFORMERS)
from .models.classifiers.augsub_classifier import (
    FINE_TUNE_HINT, SUB_MODELS, check_classification_head, describe_parts)
from .models.wrappers import AugSubDistributedDataParallel

DEFAULT_RATIO = 0.5
WRAPPER = AugSubDistributedDataParallel.__name__
CONSTRUCTOR = AugSubOptimWrapperConstructor.__name__
# FlexibleRunner: mmengine's strategy -> ours; ours -> the wrapper it needs
# in `model_wrapper` (None: the strategy builds its own).
FLEXIBLE_STRATEGIES = dict(
    SingleDeviceStrategy='AugSubSingleDeviceStrategy',
    DDPStrategy='AugSubDDPStrategy',
    FSDPStrategy='AugSubFSDPStrategy',
    DeepSpeedStrategy='AugSubDeepSpeedStrategy')
AUGSUB_STRATEGIES = dict(
    AugSubSingleDeviceStrategy=None,
    AugSubDDPStrategy=WRAPPER,
    AugSubFSDPStrategy='AugSubFullyShardedDataParallel',
    AugSubDeepSpeedStrategy=None)
#: Model types of the switch: the type an MMPretrain classifier gets, and
#: the AugSub classifier type it gets (AugSubClassifier builds the AugSub
#: classifier of a config with ``model_name`` and no backbone too).
SWITCH_TYPES = dict(ImageClassifier='AugSubClassifier',
                    TimmClassifier='AugSubTimmClassifier',
                    HuggingFaceClassifier='AugSubHuggingFaceClassifier')
AUGSUB_TYPES = ('AugSubClassifier', 'AugSubTimmClassifier',
                'AugSubHuggingFaceClassifier')
SPEC_HELP = (f'TYPE[:RATIO] with TYPE one of {SUB_MODELS} and RATIO a number '
             f'in (0, 1) (default {DEFAULT_RATIO}), e.g. AugMask:0.5')


def resolve_config(path: str) -> str:
    """The file of a config given as a path or as ``package::path``.

    ``Config.fromfile`` reads ``package::path`` only inside ``_base_``;
    this resolves it to the config the package ships, so that the tools
    accept a model-zoo config (``mmpretrain::...``) or one of ours
    (``augsub_mm::...``) directly.

    Args:
        path (str): A config file, or e.g.
            ``'mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py'``,
            ``'augsub_mm::swin/swin-tiny_16xb64-augmask_in1k.py'``.

    Returns:
        str: ``path`` itself if it is a file or has no ``::``, else the
        shipped config's absolute path.
    """
    if osp.isfile(path) or '::' not in path:
        return path
    package, rel_path = path.split('::', 1)
    if package == 'augsub_mm':
        # Installed: augsub_mm/.mim/configs; a source checkout also has
        # configs/ beside the package (editable installs).
        here = osp.dirname(osp.abspath(__file__))
        roots = [osp.join(here, '.mim', 'configs'),
                 osp.join(osp.dirname(here), 'configs')]
    elif is_installed(package):
        roots = [osp.join(get_installed_path(package), '.mim', 'configs')]
    else:
        raise FileNotFoundError(
            f'Config {path!r}: package {package!r} is not installed.')
    for root in roots:
        shipped = osp.join(root, rel_path)
        if osp.isfile(shipped):
            return shipped
    raise FileNotFoundError(
        f'Config {path!r}: {package} ships no {rel_path} (looked in '
        f'{", ".join(roots)}).')


def parse_augsub(spec: str) -> dict:
    """Parse a command-line sub-model spec ``TYPE[:RATIO]``.

    Args:
        spec (str): ``'AugMask'``, ``'AugMask:0.5'``, ``'AugPath:0.3'``, ...
            The type is matched case-insensitively.

    Returns:
        dict: The ``augsub`` argument of ``AugSubClassifier``.

    Examples:
        >>> parse_augsub('AugPath:0.3')
        {'type': 'AugPath', 'ratio': 0.3}
        >>> parse_augsub('augmask')
        {'type': 'AugMask', 'ratio': 0.5}
    """
    kind, sep, ratio_str = spec.strip().partition(':')
    by_lower = {name.lower(): name for name in SUB_MODELS}
    if kind.lower() not in by_lower:
        raise ValueError(f'Unknown sub-model {kind!r} in --augsub {spec!r}: '
                         f'expected {SPEC_HELP}.')
    ratio = DEFAULT_RATIO
    if sep:
        try:
            ratio = float(ratio_str)
        except ValueError:
            ratio = None
        if ratio is None or not 0 < ratio < 1:
            raise ValueError(f'Bad ratio {ratio_str!r} in --augsub {spec!r}: '
                             f'expected {SPEC_HELP}.')
    return dict(type=by_lower[kind.lower()], ratio=ratio)


def _type_name(model_type) -> str:
    # 'mmpretrain.ImageClassifier' -> 'ImageClassifier'; lazy-import configs
    # hold the class itself.
    name = getattr(model_type, '__name__', model_type)
    return str(name).split('.')[-1]


def enable_augsub(cfg: Config, augsub: dict) -> Config:
    """Switch AugSub on in a plain classification config, in place.

    The config equivalent of the four lines a user would add to a config
    file: ``AugSubClassifier`` instead of ``ImageClassifier``, the sub-model,
    ``augsub_mm`` in ``custom_imports`` (so that the saved config reloads),
    and a different random seed on each rank so that ranks draw different
    masks. The DDP wrapper is set by :func:`prepare_augsub_config`.

    Args:
        cfg (Config): A config whose ``model.type`` is ``ImageClassifier``
            (any model-zoo classification config), ``TimmClassifier``
            (a timm model) or ``HuggingFaceClassifier`` (a transformers
            model; refused here if transformers is not installed), or
            already an AugSub classifier (then only ``augsub`` is
            replaced).
        augsub (dict): The sub-model, e.g. ``parse_augsub('AugMask:0.5')``.

    Returns:
        Config: ``cfg``, modified.

    Examples:
        >>> cfg = Config(dict(model=dict(type='ImageClassifier')))
        >>> cfg = enable_augsub(cfg, dict(type='AugMask', ratio=0.5))
        >>> cfg.model.type, cfg.randomness.diff_rank_seed
        ('AugSubClassifier', True)
    """
    model = cfg.get('model')
    model_type = _type_name(model.get('type')) if model else None
    if model_type == 'HuggingFaceClassifier' and \
            not transformers_installed():
        raise ValueError(HF_REFUSAL.format(
            what=repr(model.get('model_name')), why=NO_TRANSFORMERS))
    if model_type not in (*SWITCH_TYPES, *AUGSUB_TYPES):
        raise ValueError(
            f'AugSub trains image classifiers: model.type must be '
            f"'ImageClassifier', 'TimmClassifier' or 'HuggingFaceClassifier' "
            f"(or an AugSub classifier "
            f'already), got {model_type!r}. ' + FINE_TUNE_HINT)
    model.type = SWITCH_TYPES.get(model_type, model_type)
    model.augsub = dict(augsub)

    imports = cfg.get('custom_imports') or dict(allow_failed_imports=False)
    modules = imports.get('imports', [])
    modules = [modules] if isinstance(modules, str) else list(modules)
    if 'augsub_mm' not in modules:
        modules.append('augsub_mm')
    imports['imports'] = modules
    cfg.custom_imports = imports

    randomness = cfg.get('randomness') or dict()
    randomness['diff_rank_seed'] = True
    cfg.randomness = randomness
    return cfg


def prepare_augsub_config(cfg: Config) -> Config:
    """Make an AugSub config train correctly under the default Runner, in
    place; configs of other models are returned unchanged.

    - ``model_wrapper_cfg``, when absent, becomes
      ``dict(type='AugSubDistributedDataParallel')``: mmengine's default DDP
      wrapper does its own training step and would skip the sub-model.
    - Under ``runner_type='FlexibleRunner'``, which never reads
      ``model_wrapper_cfg``, the ``strategy`` gets the AugSub wrapper
      instead (see :func:`augsub_strategy`).
    - A top-level ``find_unused_parameters`` is carried into the wrapper
      config (mmengine ignores the top-level key once a wrapper config
      exists); a value given inside the wrapper config wins.
    - ``optim_wrapper.constructor`` becomes ``AugSubOptimWrapperConstructor``
      over the recipe's constructor (kept as ``base_constructor``), so that
      parameters of the sub-model (Swin's mask token) are never
      weight-decayed whatever the recipe's ``paramwise_cfg``; for models
      without such parameters the optimizer is exactly the recipe's.

    Args:
        cfg (Config): A full training config.

    Returns:
        Config: ``cfg``, modified.

    Raises:
        ValueError: If the config asks for another model wrapper or
            strategy, which would run its own training step.
        TypeError: If the model is not an image classifier: the switch
            lines merged onto a self-supervised config (MAE, SimCLR, ...).
    """
    model = cfg.get('model')
    if not model or _type_name(model.get('type')) not in AUGSUB_TYPES:
        return cfg
    if model.get('head') is not None:  # (without one, the build refuses)
        check_classification_head(model.head, lambda: _describe_model(cfg))
    runner_type = cfg.get('runner_type')
    if runner_type is not None and _type_name(runner_type) == 'FlexibleRunner':
        _prepare_flexible_runner(cfg)
        if cfg.get('optim_wrapper') is not None:
            use_augsub_constructor(cfg.optim_wrapper)
        return cfg
    wrapper = cfg.get('model_wrapper_cfg') or dict(type=WRAPPER)
    wrapper_type = _type_name(wrapper.get('type', 'MMDistributedDataParallel'))
    if wrapper_type != WRAPPER:
        raise ValueError(
            f'{_type_name(model.type)} needs model_wrapper_cfg type '
            f'{WRAPPER!r}, got '
            f'{wrapper_type!r}: other wrappers run their own training step '
            'and skip the sub-model. Remove model_wrapper_cfg from the config '
            f"or set model_wrapper_cfg = dict(type='{WRAPPER}') (DDP options "
            'such as find_unused_parameters go inside it).')
    if 'find_unused_parameters' in cfg and \
            'find_unused_parameters' not in wrapper:
        wrapper['find_unused_parameters'] = cfg.find_unused_parameters
    cfg.model_wrapper_cfg = wrapper

    if cfg.get('optim_wrapper') is not None:
        use_augsub_constructor(cfg.optim_wrapper)
    return cfg


def _replaced_model(filename: Optional[str]
                    ) -> Optional[Tuple[str, str]]:
    """The model type that the bases of config file ``filename`` define,
    and the base that defines it: what a ``model = dict(type=
    'AugSubClassifier', ...)`` line merged onto them replaced. None if no
    base defines a model (or the config has no file)."""
    if not filename or not osp.isfile(filename):
        return None
    for base in Config._get_base_files(filename):
        path, _ = Config._get_cfg_path(base, filename)
        model = Config.fromfile(path).get('model') or {}
        if model.get('type') is None:
            continue
        if _type_name(model.type) in AUGSUB_TYPES:
            # An AugSub config itself: the model it switched on is further
            # down its bases.
            return _replaced_model(path)
        return _type_name(model.type), base
    return None


def _describe_model(cfg: Config) -> str:
    model = dict(cfg.model)
    model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    replaced = _replaced_model(cfg.filename)
    if replaced is None:
        return describe_parts(model)
    kind, base = replaced
    return (f"the config's model is {kind} (from {base}), whose type the "
            "line `model = dict(type='AugSubClassifier', ...)` replaced; "
            + describe_parts(model))


def augsub_strategy(strategy: Optional[dict], launcher: str = 'none'
                    ) -> dict:
    """The FlexibleRunner ``strategy`` that runs the AugSub step.

    mmengine's strategies build wrappers whose training step skips the
    sub-model, and never tell the optimizer wrapper the iteration it is at.
    This returns ``strategy`` (a new dict) with mmengine's type replaced by
    ours (:mod:`augsub_mm.engine.strategies`):

    - ``SingleDeviceStrategy`` -> ``AugSubSingleDeviceStrategy``;
    - ``DDPStrategy`` -> ``AugSubDDPStrategy`` (wrapper
      ``AugSubDistributedDataParallel``);
    - ``FSDPStrategy`` -> ``AugSubFSDPStrategy`` (wrapper
      ``AugSubFullyShardedDataParallel``);
    - ``DeepSpeedStrategy`` -> ``AugSubDeepSpeedStrategy``;
    - no strategy: FlexibleRunner's default for ``launcher``, the single
      device one for ``'none'``, DDP otherwise.

    Other keys (FSDP's ``auto_wrap_policy``, DeepSpeed's ``zero_optimization``
    and ``fp16``, ...) are kept; DDP options go inside ``model_wrapper``.

    Args:
        strategy (dict, optional): The config's ``strategy``.
        launcher (str): The config's launcher. Defaults to ``'none'``.

    Returns:
        dict: The strategy to use.

    Raises:
        ValueError: For a strategy or a wrapper that AugSub does not run in.

    Examples:
        >>> augsub_strategy(dict(type='FSDPStrategy'), 'pytorch')['type']
        'AugSubFSDPStrategy'
    """
    if strategy is None:
        strategy = dict(type='SingleDeviceStrategy' if launcher == 'none'
                        else 'DDPStrategy')
    strategy = dict(strategy)
    kind = _type_name(strategy.get('type'))
    kind = FLEXIBLE_STRATEGIES.get(kind, kind)
    if kind not in AUGSUB_STRATEGIES:
        raise ValueError(
            f'AugSub cannot run in strategy {kind!r}: under FlexibleRunner '
            f'it trains with {sorted(FLEXIBLE_STRATEGIES)} (each replaced by '
            'its AugSub version), or use the default Runner.')
    strategy['type'] = kind
    wrapper = AUGSUB_STRATEGIES[kind]
    if wrapper is None:
        return strategy
    model_wrapper = dict(strategy.get('model_wrapper') or {})
    wrapper_type = _type_name(model_wrapper.get('type', wrapper))
    if wrapper_type != wrapper:
        raise ValueError(
            f'AugSub under {kind} needs model_wrapper type {wrapper!r}, got '
            f'{wrapper_type!r}, which runs its own training step and would '
            'skip the sub-model. Remove the type from strategy.model_wrapper '
            f'or set it to {wrapper!r}.')
    model_wrapper['type'] = wrapper
    strategy['model_wrapper'] = model_wrapper
    return strategy


def _prepare_flexible_runner(cfg: Config) -> None:
    strategy = augsub_strategy(cfg.get('strategy'),
                               cfg.get('launcher', 'none'))
    # FlexibleRunner reads neither model_wrapper_cfg (which the four config
    # lines set) nor the top-level find_unused_parameters: DDP options given
    # there move into the DDP strategy's wrapper.
    options = dict(cfg.pop('model_wrapper_cfg', None) or {})
    options.pop('type', None)
    if 'find_unused_parameters' in cfg:
        options.setdefault('find_unused_parameters',
                           cfg.find_unused_parameters)
    if strategy['type'] == 'AugSubDDPStrategy':
        for key, value in options.items():
            strategy['model_wrapper'].setdefault(key, value)
    cfg.strategy = strategy


def use_augsub_constructor(optim_wrapper: dict) -> dict:
    """Build ``optim_wrapper`` with ``AugSubOptimWrapperConstructor``, in
    place, over the recipe's own constructor (kept as ``base_constructor``);
    nothing changes if it already uses ours. Returns ``optim_wrapper``."""
    constructor = optim_wrapper.get('constructor',
                                    'DefaultOptimWrapperConstructor')
    if _type_name(constructor) != CONSTRUCTOR:
        optim_wrapper['base_constructor'] = constructor
        optim_wrapper['constructor'] = CONSTRUCTOR
    return optim_wrapper


@contextlib.contextmanager
def _no_cuda_set_device() -> Iterator[None]:
    set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = set_device


def setup_cpu_dist(cfg: Config) -> bool:
    """Make a distributed launch work on a machine without an accelerator.

    Two things in mmengine assume a GPU: ``init_dist`` calls
    ``torch.cuda.set_device`` whatever the backend, and the Runner gives its
    DDP wrapper ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU
    module. This starts the process group with the same launcher logic
    (``pytorch``, ``slurm``, ``mpi``: rank and world size from their
    environment variables), that call skipped and the backend forced to
    gloo (nccl needs CUDA), and sets ``device_ids=None`` in the wrapper
    config, in place. Call it before building the Runner, which then finds
    the process group and skips its own ``init_dist``.

    Args:
        cfg (Config): A full config with ``launcher`` set.

    Returns:
        bool: Whether anything was done: False on a machine with an
        accelerator or without a launcher, where the Runner does it all.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or get_device() != 'cpu':
        return False
    env_cfg = cfg.get('env_cfg', {})
    # The Runner sets the start method before init_dist; do the same, so that
    # init_dist does not choose 'spawn' and the Runner then warn about it.
    set_multi_processing(**env_cfg.get('mp_cfg', {}), distributed=True)
    with _no_cuda_set_device():
        init_dist(launcher, **dict(env_cfg.get('dist_cfg', {}),
                                   backend='gloo'))
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # mmengine's default wrapper, as Runner.wrap_model builds it.
        wrapper = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cls = MODEL_WRAPPERS.get(
        wrapper.get('type', 'MMDistributedDataParallel'))
    if isinstance(wrapper_cls, type) and \
            issubclass(wrapper_cls, DistributedDataParallel):
        wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    return True


def close_dist() -> None:
    """End a tool's distributed run: wait for every rank, then destroy the
    process group.

    Left to interpreter exit, the process group's threads are torn down in
    no fixed order, and a rank that finished its work can still abort
    ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed run; torch asks for an explicit
    ``destroy_process_group`` with nccl too. Call it after a successful
    ``runner.train()`` / ``runner.test()``; it does nothing without a
    process group.
    """
    if torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
