"""Hand-written references for the gradient of an AugSub training step.

Shared by the exactness tests (``tests/test_engine/test_exactness.py``, on
the CPU) and ``gpu_check.py`` (the same cases on a CUDA device), so that both
compare AugSub with one reference. The reference never goes through
augsub_mm's sub-model code:

- a plain ``ImageClassifier`` with the same weights (and WITHOUT gradient
  checkpointing);
- the sub-model made by hand on a second module tree that shares the
  parameters: tokens gathered, the mask token put at masked blocks, input
  blocks zeroed, dropout and drop-path rates set, each mask drawn here from
  the sub pass's documented stream (``sub_pass_seed`` of the iteration,
  seeded on the CPU and on the device) in the documented order (per sample,
  the lowest uniform noise) and compared with the masks AugSub drew;
- main and sub losses written out here (soft cross-entropy / BCE summed
  over classes, averaged over samples), and ONE autograd call per
  micro-batch on ``(main + sub) / 2`` divided by the accumulation count.

From augsub_mm it takes the seed function (the documented stream) and the
masking functions' names, to record what AugSub drew.
"""
import copy
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.optim import OptimWrapper
from mmengine.runner.activation_checkpointing import \
    turn_on_activation_checkpointing
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.models.families import grid as grid_family
from augsub_mm.models.utils import masking, sub_pass_seed

NUM_CLASSES = 4
RATIO = 0.5
TINY_VIT = dict(embed_dims=16, num_layers=2, num_heads=2,
                feedforward_channels=32)


def backbone_cfg(family, with_cp=False, frozen=False):
    cfg = dict(
        vit=dict(type='VisionTransformer', arch=TINY_VIT, img_size=32,
                 patch_size=8, drop_path_rate=0.1),
        deit3=dict(type='DeiT3', arch=TINY_VIT, img_size=32, patch_size=8,
                   drop_path_rate=0.1),
        swin=dict(type='SwinTransformer',
                  arch=dict(embed_dims=16, depths=[1, 1], num_heads=[1, 1]),
                  img_size=32, window_size=4, drop_path_rate=0.1,
                  out_indices=(1, ), with_cp=with_cp),
        resnet=dict(type='ResNet', depth=18, stem_channels=8,
                    base_channels=8, drop_path_rate=0.1, with_cp=with_cp),
        convnext=dict(type='ConvNeXt',
                      arch=dict(depths=[1, 1], channels=[16, 32]),
                      out_indices=(1, ), drop_path_rate=0.1,
                      with_cp=with_cp),
    )[family]
    if frozen:
        cfg['frozen_stages'] = 1
    return cfg


def classifier_cfg(family, with_cp=False, frozen=False):
    channels = dict(vit=16, deit3=16, swin=32, resnet=64, convnext=32)
    bce = family in ('resnet', 'convnext')  # the RSB-style recipes
    loss = dict(type='CrossEntropyLoss', use_sigmoid=bce)
    head = dict(type='VisionTransformerClsHead' if family in ('vit', 'deit3')
                else 'LinearClsHead', num_classes=NUM_CLASSES,
                in_channels=channels[family], loss=loss)
    neck = dict(type='GlobalAveragePooling') if family in (
        'swin', 'resnet') else None
    return dict(
        type='ImageClassifier',
        backbone=backbone_cfg(family, with_cp, frozen), neck=neck, head=head,
        data_preprocessor=dict(num_classes=NUM_CLASSES, mean=[127.5] * 3,
                               std=[127.5] * 3),
        train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8)]))


def augsub_cfg(family, kind, **options):
    cfg = dict(type=kind, ratio=RATIO, **options)
    if kind == 'AugMask' and family != 'vit' and family != 'deit3':
        cfg['input_patch_size'] = 16  # 4 blocks on 32 px inputs
    return cfg


def batch(seed, n=4):
    g = torch.Generator().manual_seed(1000 + seed)
    return dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES)
                      for i in range(n)])


def record_step_grads(model, optim) -> list:
    """A list that gets, at each optimizer step, the gradients that reach
    it (``{name: grad}``)."""
    seen = []
    step = optim.optimizer.step

    def record(*args, **kwargs):
        seen.append({n: p.grad.clone() for n, p in model.named_parameters()
                     if p.grad is not None})
        return step(*args, **kwargs)

    optim.optimizer.step = record
    return seen


def seed_all(seed):
    np.random.seed(seed)  # Mixup's lambda
    torch.manual_seed(seed)  # Mixup's permutation, the main drop-path


# -- recording the masks AugSub draws ----------------------------------------
class MaskRecorder:
    """Records every token-keep index set and block mask AugSub draws."""

    def __init__(self):
        self.drawn = []

    def __enter__(self):
        keep, block = masking.random_keep_indices, masking.block_mask

        def record(fn):
            def wrapper(*args, **kwargs):
                out = fn(*args, **kwargs)
                self.drawn.append(out.clone())
                return out
            return wrapper

        self._patches = [
            patch.object(masking, 'random_keep_indices', record(keep)),
            patch.object(masking, 'block_mask', record(block)),
            patch.object(grid_family, 'block_mask', record(block)),
        ]
        for p in self._patches:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self._patches:
            p.stop()


# -- the sub-model, by hand ------------------------------------------------
def blocks_to_grid(blocks, block, height, width):
    """(B, gh, gw) block mask -> (B, height, width), by indexing."""
    rows = torch.arange(height, device=blocks.device) // block
    cols = torch.arange(width, device=blocks.device) // block
    return blocks[:, rows][:, :, cols]


def draw_blocks(batch, gh, gw, drawn, device):
    """n - int(n * (1 - ratio)) of the n blocks, those with the lowest
    uniform noise, masked per sample; the noise is drawn on ``device``."""
    n = gh * gw
    num_masked = n - int(n * (1 - RATIO))
    masked = torch.zeros(batch, n, dtype=torch.bool, device=device)
    masked.scatter_(
        1, torch.rand(batch, n, device=device).argsort(1)[:, :num_masked],
        True)
    masked = masked.view(batch, gh, gw)
    drawn.append(masked)
    return masked


class HostDrawnDropPath(nn.Module):
    """Drop-path whose per-sample keep draw is made on the CPU generator,
    as AugPath documents for the branches it skips
    (``draw_kept_samples``): ``floor(keep_prob + u)``, ``u`` a float32
    uniform on the CPU, whatever the device of ``x``. On the CPU it is
    mmcv's drop-path draw for draw."""

    def __init__(self, drop_prob):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        keep = (keep_prob + torch.rand(x.shape[0])).floor()
        keep = keep.to(x.device, x.dtype).view(-1, *(1, ) * (x.ndim - 1))
        return x.div(keep_prob) * keep


def hand_sub_model(family, kind, net, drawn, mask_token,
                   host_drawn_drop_path=False):
    """Make ``net`` (a plain classifier) compute the sub-model, drawing its
    masks from the current stream, in the order AugSub documents (per
    sample, the lowest uniform noise); appends them to ``drawn`` and returns
    the hook handles to remove. ``host_drawn_drop_path``: the drop-paths
    draw on the CPU (AugPath's skipping branches, ``skip=True``)."""
    backbone = net.backbone
    handles = []
    if kind == 'AugDrop':
        blocks = backbone.stages if family == 'swin' else backbone.layers
        for name, m in blocks.named_modules():
            # the blocks' projection and MLP dropout; attention-probability
            # dropout is left alone
            if isinstance(m, nn.Dropout) and not name.endswith('attn_drop'):
                m.p = RATIO
    elif kind == 'AugPath':
        for parent in list(backbone.modules()):
            for name, child in list(parent.named_children()):
                if host_drawn_drop_path and isinstance(child, DropPath):
                    setattr(parent, name,
                            HostDrawnDropPath(RATIO).train(child.training))
                elif isinstance(child, DropPath):
                    child.drop_prob = RATIO
                elif name == 'drop_path' and isinstance(child, nn.Identity):
                    setattr(parent, name,
                            DropPath(RATIO).train(child.training))
    elif kind != 'AugMask':
        pass  # a plain second pass (used to check a tolerance's power)
    elif family in ('vit', 'deit3'):
        prefix = 1 if family == 'vit' else 0  # DeiT3 adds cls later

        def keep_tokens(module, args, out):
            # int(L * (1 - ratio)) tokens with the lowest uniform noise.
            B, N, _ = out.shape
            keep = int((N - prefix) * (1 - RATIO))
            noise = torch.rand(B, N - prefix, device=out.device)
            idx = noise.argsort(1)[:, :keep].sort(1)[0]
            drawn.append(idx)
            kept = torch.stack([out[b, prefix + idx[b]] for b in range(B)])
            return torch.cat([out[:, :prefix], kept], dim=1)

        handles.append(
            backbone.drop_after_pos.register_forward_hook(keep_tokens))
    elif family == 'swin':
        def replace_tokens(module, args, out):
            x, (h, w) = out
            masked = blocks_to_grid(draw_blocks(x.shape[0], h // 4, w // 4,
                                                drawn, x.device), 4, h, w)
            masked = masked.reshape(x.shape[0], h * w, 1)
            token = mask_token.view(1, 1, -1).to(x.dtype)
            return torch.where(masked, token, x), (h, w)

        handles.append(
            backbone.patch_embed.register_forward_hook(replace_tokens))
    else:
        def zero_patches(module, args):
            x = args[0]
            h, w = x.shape[-2:]
            blocks = draw_blocks(x.shape[0], h // 16, w // 16, drawn,
                                 x.device)
            masked = blocks_to_grid(blocks, 16, h, w)
            return (x * (~masked).unsqueeze(1).to(x.dtype), )

        handles.append(backbone.register_forward_pre_hook(zero_patches))
    return handles


def main_loss_by_hand(score, target, bce):
    if bce:
        return F.binary_cross_entropy_with_logits(
            score, target, reduction='none').sum(-1).mean()
    return -(target * score.log_softmax(-1)).sum(-1).mean()


def sub_loss_by_hand(sub_score, main_score, bce):
    teacher = main_score.detach().to(sub_score.dtype)
    if bce:
        return F.binary_cross_entropy_with_logits(
            sub_score, teacher.sigmoid(), reduction='none').sum(-1).mean()
    return -(teacher.softmax(-1) * sub_score.log_softmax(-1)).sum(-1).mean()


@contextmanager
def forked_stream(device):
    """The CPU generator and ``device``'s, restored on exit."""
    device = torch.device(device)
    if device.type == 'cpu':
        with torch.random.fork_rng(devices=[]):
            yield
        return
    index = device.index if device.index is not None \
        else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        yield


def reference_grads(family, kind, plain_state, mask_token, drawn, counts,
                    frozen=False, autocast=None, device='cpu',
                    host_drawn_drop_path=False):
    device = torch.device(device)
    # The sub-model is the same network (the very same parameters) with the
    # sub-model's settings made by hand on a second module tree.
    main_net, sub_net, token = tied_pair(
        classifier_cfg(family, frozen=frozen), plain_state, mask_token,
        device)
    own_draws = []
    handles = hand_sub_model(family, kind, sub_net, own_draws, token,
                             host_drawn_drop_path)
    bce = family in ('resnet', 'convnext')

    def cast():
        # One autocast region per forward, as the step's optim_context:
        # weights are cast (and their gradients rounded) once per pass.
        return torch.autocast(device.type, dtype=autocast,
                              enabled=bool(autocast))

    run_seed = None
    for i in range(counts):
        seed_all(i)
        if run_seed is None:
            # The run's seed, as the step reads it: at its first iteration.
            run_seed = torch.initial_seed()
        data = main_net.data_preprocessor(batch(i), True)
        x = data['inputs']
        target = torch.stack([s.gt_score for s in data['data_samples']])
        # Losses inside the autocast region, as mmpretrain's head does.
        with cast():
            main_score = main_net.head(main_net.extract_feat(x))
            main_loss = main_loss_by_hand(main_score, target, bce)
        with forked_stream(device), cast():
            # Seeds the CPU generator and every device's.
            torch.manual_seed(sub_pass_seed(i, base_seed=run_seed))
            sub_score = sub_net.head(sub_net.extract_feat(x))
            sub_loss = sub_loss_by_hand(sub_score, main_score, bce)
        loss = (main_loss + sub_loss) / 2
        (loss / counts).backward()  # one autograd call per micro-batch
    for h in handles:
        h.remove()
    # The masks AugSub drew are those drawn here from the same stream.
    assert kind == 'none' or len(own_draws) == len(drawn), \
        f'{len(own_draws)} masks drawn by hand, {len(drawn)} by AugSub'
    for mine, theirs in zip(own_draws, drawn):
        assert torch.equal(mine, theirs.to(mine.device)), \
            'AugSub drew other masks than the documented stream'
    grads = {n: p.grad for n, p in main_net.named_parameters()
             if p.grad is not None}
    if token is not None:
        grads['augsub.mask_token'] = token.grad
    return grads


def tie(module, source):
    """Make every parameter of ``module`` the corresponding one of
    ``source`` (same objects), so that gradients accumulate in one place."""
    for (name, _), (_, param) in zip(list(module.named_parameters()),
                                     list(source.named_parameters())):
        *path, leaf = name.split('.')
        owner = module
        for part in path:
            owner = getattr(owner, part)
        owner._parameters[leaf] = param


def tied_pair(cfg, plain_state, mask_token=None, device='cpu'):
    """The reference's two module trees: the plain classifier built from
    ``cfg`` with ``plain_state``, in training mode (the main model), and a
    deep copy of it whose parameters are the very same objects (the
    sub-model's settings are then made by hand on it); and a fresh leaf
    copy of ``mask_token`` (None without one)."""
    main_net = MODELS.build(cfg)
    main_net.load_state_dict(plain_state)
    main_net.to(device).train()
    sub_net = copy.deepcopy(main_net)
    tie(sub_net, main_net)
    token = None if mask_token is None else \
        mask_token.detach().clone().to(device).requires_grad_(True)
    return main_net, sub_net, token


def single_label_step_grads(main_net, main_scores, sub_scores, x, labels,
                            own_draws, drawn, mask_token=None, autocast=None,
                            main_seed=7):
    """The reference step on a single-label batch (the timm and
    transformers classifiers' tests, the zoo matrix), by hand: the main pass
    (``main_scores(x)``, its own draws from ``main_seed``, as the tested
    step's) and its cross-entropy; the sub pass (``sub_scores(x)``) under
    the sub pass's seed of iteration 0 and its soft-target cross-entropy
    against the detached main softmax; ONE autograd call on their mean.
    Each pass is one autocast region (``autocast``: a dtype, or None), its
    loss inside, as the step's ``optim_context``. Checks that the masks
    drawn by hand (``own_draws``) are AugSub's (``drawn``); returns the
    gradients of ``main_net``'s parameters and of ``mask_token``."""
    torch.manual_seed(main_seed)
    # From the run's seed, as the step does before its main pass (RevViT's
    # layers reseed the generator).
    seed = sub_pass_seed(0)

    def cast():
        return torch.autocast('cpu', dtype=autocast, enabled=bool(autocast))

    with cast():
        main_score = main_scores(x)
        main_loss = F.cross_entropy(main_score, labels)
    with torch.random.fork_rng(devices=[]), cast():
        torch.manual_seed(seed)
        sub_score = sub_scores(x)
        teacher = main_score.detach().softmax(-1)
        sub_loss = -(teacher * sub_score.log_softmax(-1)).sum(-1).mean()
    ((main_loss + sub_loss) / 2).backward()  # one autograd call
    assert len(own_draws) == len(drawn)
    for mine, theirs in zip(own_draws, drawn):
        assert torch.equal(mine, theirs)
    grads = {n: p.grad for n, p in main_net.named_parameters()
             if p.grad is not None}
    if mask_token is not None:
        grads['augsub.mask_token'] = mask_token.grad
    return grads


def build_augsub(family, kind, with_cp=False, step_mode='two_pass',
                 frozen=False, device='cpu', augsub_options=None,
                 **model_options):
    """The AugSub model of a case (seeded weights, layer scales at 1) and
    the plain classifier's state it starts from."""
    torch.manual_seed(0)
    cfg = classifier_cfg(family, with_cp, frozen)
    cfg.update(type='AugSubClassifier',
               augsub=augsub_cfg(family, kind, **(augsub_options or {})),
               step_mode=step_mode, **model_options)
    model = MODELS.build(cfg)
    model.to(device).train()
    for name, param in model.named_parameters():
        if 'gamma' in name:
            # Layer scales at 1, not ~1e-5: the residual branches (where the
            # sub-models act) must weigh in the gradient for a test to see.
            param.data.fill_(1.0)
    plain_state = {k: v.clone() for k, v in model.state_dict().items()
                   if not k.startswith('augsub.')}
    return model, plain_state


def augsub_grads(family, kind, with_cp, step_mode, counts, frozen=False,
                 optim_wrapper_factory=None, checkpointed=(), device='cpu',
                 augsub_options=None, **model_options):
    model, plain_state = build_augsub(family, kind, with_cp, step_mode,
                                      frozen, device, augsub_options,
                                      **model_options)
    if checkpointed:
        # What the Runner does for `activation_checkpointing` in a config.
        turn_on_activation_checkpointing(model, list(checkpointed))
    token = getattr(model.augsub, 'mask_token', None)
    token = None if token is None else token.detach().clone()
    if optim_wrapper_factory is None:
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                             accumulative_counts=counts)
    else:
        optim = optim_wrapper_factory(model)
    if token is not None:
        model.augsub.check_optimizer(optim.optimizer)
    optim.initialize_count_status(model, 0, counts)
    seen = record_step_grads(model, optim)
    with MaskRecorder() as recorder:
        for i in range(counts):
            seed_all(i)
            model.train_step(batch(i), optim)
    assert len(seen) == 1, f'{len(seen)} optimizer steps, expected one'
    return seen[0], plain_state, token, recorder.drawn


def assert_same_grads(got, expected, rtol=1e-5, atol=1e-6):
    assert set(got) == set(expected), \
        f'parameters with a gradient differ: {set(got) ^ set(expected)}'
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad.to(got[name].device),
                                   rtol=rtol, atol=atol, msg=name)


def max_abs_difference(got, expected):
    return max(float((got[n] - e.to(got[n].device)).abs().max())
               for n, e in expected.items() if e is not None)


def cpu_amp_wrapper(model, dtype='bfloat16', init_scale=2.**8):
    """mmengine's AmpOptimWrapper on the CPU (autocast in ``dtype``): its
    CUDA check is patched, and its CUDA GradScaler replaced by torch's CPU
    one."""
    from mmengine.optim import AmpOptimWrapper
    path = 'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available'
    with patch(path, return_value=True):
        optim = AmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype=dtype)
    optim.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)
    return optim


def max_relative_error(got, expected):
    """Worst, over tensors, of ||got - expected|| / ||expected||: the error
    of each gradient tensor as a whole (one element's bfloat16 rounding
    against the tensor's largest element swung with the CPU's kernels: Swin
    measured 1.8 % earlier, 9.0 % on 2026-12-03, where the norm gives
    3.4 %)."""
    return max(float((got[n] - e.to(got[n].device)).norm()
                     / e.norm().clamp(min=1e-12))
               for n, e in expected.items() if e is not None)
