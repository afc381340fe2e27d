"""The gradient that reaches the optimizer equals an independent reference.

For each family (ViT, DeiT-III, Swin, ResNet, ConvNeXt) x sub-model (AugMask,
AugDrop where the family has block dropout, AugPath) x gradient
checkpointing (off / on, where the backbone has ``with_cp``) x step mode
(two_pass, joint; joint with checkpointing is refused) x gradient
accumulation (1, 2), the gradient seen by ``optimizer.step`` of an AugSub
training step is compared with one computed here by hand:

- a plain ``ImageClassifier`` with the same weights (and WITHOUT gradient
  checkpointing);
- the masks AugSub drew are recorded and applied by hand (token gathering,
  mask-token replacement, zeroed input patches, written here); dropout and
  drop-path rates are set by hand, and their draws come from the same seed
  (the sub pass's documented stream, ``sub_pass_seed(iteration)``);
- main and sub losses written out here (soft cross-entropy / BCE summed over
  classes, averaged over samples), and ONE autograd call per micro-batch on
  ``(main + sub) / 2`` divided by the accumulation count.

ResNet + AugMask is also run with ``sub_bn_stats='frozen'`` (checkpointing x
step mode x accumulation) against the same reference: the option changes
only running statistics, never the gradient.
"""
import copy
from unittest.mock import patch

import numpy as np
import pytest
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


def augsub_cfg(family, kind):
    cfg = dict(type=kind, ratio=RATIO)
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
    rows = torch.arange(height) // block
    cols = torch.arange(width) // block
    return blocks[:, rows][:, :, cols]


def draw_blocks(batch, gh, gw, drawn):
    """n - int(n * (1 - ratio)) of the n blocks, those with the lowest
    uniform noise, masked per sample."""
    n = gh * gw
    num_masked = n - int(n * (1 - RATIO))
    masked = torch.zeros(batch, n, dtype=torch.bool)
    masked.scatter_(1, torch.rand(batch, n).argsort(1)[:, :num_masked], True)
    masked = masked.view(batch, gh, gw)
    drawn.append(masked)
    return masked


def hand_sub_model(family, kind, net, drawn, mask_token):
    """Make ``net`` (a plain classifier) compute the sub-model, drawing its
    masks from the current stream, in the order AugSub documents (per
    sample, the lowest uniform noise); appends them to ``drawn`` and returns
    the hook handles to remove."""
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
                if isinstance(child, DropPath):
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
            idx = torch.rand(B, N - prefix).argsort(1)[:, :keep].sort(1)[0]
            drawn.append(idx)
            kept = torch.stack([out[b, prefix + idx[b]] for b in range(B)])
            return torch.cat([out[:, :prefix], kept], dim=1)

        handles.append(
            backbone.drop_after_pos.register_forward_hook(keep_tokens))
    elif family == 'swin':
        def replace_tokens(module, args, out):
            x, (h, w) = out
            masked = blocks_to_grid(draw_blocks(x.shape[0], h // 4, w // 4,
                                                drawn), 4, h, w)
            masked = masked.reshape(x.shape[0], h * w, 1)
            token = mask_token.view(1, 1, -1).to(x.dtype)
            return torch.where(masked, token, x), (h, w)

        handles.append(
            backbone.patch_embed.register_forward_hook(replace_tokens))
    else:
        def zero_patches(module, args):
            x = args[0]
            h, w = x.shape[-2:]
            blocks = draw_blocks(x.shape[0], h // 16, w // 16, drawn)
            masked = blocks_to_grid(blocks, 16, h, w)
            return (x * (~masked).unsqueeze(1).float(), )

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


def reference_grads(family, kind, plain_state, mask_token, drawn, counts,
                    frozen=False, autocast=None):
    main_net = MODELS.build(classifier_cfg(family, frozen=frozen))
    main_net.load_state_dict(plain_state)
    main_net.train()
    # The sub-model is the same network (the very same parameters) with the
    # sub-model's settings made by hand on a second module tree.
    sub_net = copy.deepcopy(main_net)
    tie(sub_net, main_net)
    token = None if mask_token is None else \
        mask_token.detach().clone().requires_grad_(True)
    own_draws = []
    handles = hand_sub_model(family, kind, sub_net, own_draws, token)
    bce = family in ('resnet', 'convnext')
    def cast():
        # One autocast region per forward, as the step's optim_context:
        # weights are cast (and their gradients rounded) once per pass.
        return torch.autocast('cpu', dtype=autocast, enabled=bool(autocast))

    for i in range(counts):
        seed_all(i)
        data = main_net.data_preprocessor(batch(i), True)
        x = data['inputs']
        target = torch.stack([s.gt_score for s in data['data_samples']])
        # Losses inside the autocast region, as mmpretrain's head does.
        with cast():
            main_score = main_net.head(main_net.extract_feat(x))
            main_loss = main_loss_by_hand(main_score, target, bce)
        with torch.random.fork_rng(devices=[]), cast():
            torch.manual_seed(sub_pass_seed(i))
            sub_score = sub_net.head(sub_net.extract_feat(x))
            sub_loss = sub_loss_by_hand(sub_score, main_score, bce)
        loss = (main_loss + sub_loss) / 2
        (loss / counts).backward()  # one autograd call per micro-batch
    for h in handles:
        h.remove()
    # The masks AugSub drew are those drawn here from the same stream.
    assert kind == 'none' or len(own_draws) == len(drawn)
    for mine, theirs in zip(own_draws, drawn):
        assert torch.equal(mine, theirs)
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


def augsub_grads(family, kind, with_cp, step_mode, counts, frozen=False,
                 optim_wrapper_factory=None, checkpointed=(),
                 **model_options):
    torch.manual_seed(0)
    cfg = classifier_cfg(family, with_cp, frozen)
    cfg.update(type='AugSubClassifier', augsub=augsub_cfg(family, kind),
               step_mode=step_mode, **model_options)
    model = MODELS.build(cfg)
    model.train()
    for name, param in model.named_parameters():
        if 'gamma' in name:
            # Layer scales at 1, not ~1e-5: the residual branches (where the
            # sub-models act) must weigh in the gradient for a test to see.
            param.data.fill_(1.0)
    plain_state = {k: v.clone() for k, v in model.state_dict().items()
                   if not k.startswith('augsub.')}
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
    seen = []
    step = optim.optimizer.step

    def record(*args, **kwargs):
        seen.append({n: p.grad.clone() for n, p in model.named_parameters()
                     if p.grad is not None})
        return step(*args, **kwargs)

    optim.optimizer.step = record
    with MaskRecorder() as recorder:
        for i in range(counts):
            seed_all(i)
            model.train_step(batch(i), optim)
    assert len(seen) == 1, 'one optimizer step'
    return seen[0], plain_state, token, recorder.drawn


def assert_same_grads(got, expected, rtol=1e-5, atol=1e-6):
    assert set(got) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=rtol, atol=atol,
                                   msg=name)


FAMILY_KINDS = [(f, k) for f in ('vit', 'deit3', 'swin', 'resnet',
                                 'convnext')
                for k in ('AugMask', 'AugDrop', 'AugPath')
                if not (k == 'AugDrop' and f in ('resnet', 'convnext'))]
CASES = [(f, k, cp, mode, counts)
         for f, k in FAMILY_KINDS
         for cp in ((False, True) if f in ('swin', 'resnet', 'convnext')
                    else (False, ))
         for mode in ('two_pass', 'joint')
         for counts in (1, 2)
         if not (cp and mode == 'joint')]


@pytest.mark.parametrize('family,kind,with_cp,step_mode,counts', CASES)
def test_gradient_equals_the_reference(family, kind, with_cp, step_mode,
                                       counts):
    got, plain_state, token, drawn = augsub_grads(family, kind, with_cp,
                                                  step_mode, counts)
    expected = reference_grads(family, kind, plain_state, token, drawn,
                               counts)
    assert_same_grads(got, expected)


FROZEN_BN_CASES = [(cp, mode, counts)
                   for cp in (False, True)
                   for mode in ('two_pass', 'joint')
                   for counts in (1, 2)
                   if not (cp and mode == 'joint')]


@pytest.mark.parametrize('with_cp,step_mode,counts', FROZEN_BN_CASES)
def test_gradient_with_frozen_sub_bn_stats(with_cp, step_mode, counts):
    """The sub pass that leaves the BatchNorm running statistics alone
    still normalizes with its batch's statistics: the same gradient as the
    reference (whose sub pass, a second module tree, updates running
    statistics of its own, which the gradient never reads)."""
    got, plain_state, token, drawn = augsub_grads(
        'resnet', 'AugMask', with_cp, step_mode, counts,
        sub_bn_stats='frozen')
    expected = reference_grads('resnet', 'AugMask', plain_state, token,
                               drawn, counts)
    assert_same_grads(got, expected)


@pytest.mark.parametrize('kind', ['AugDrop', 'AugPath'])
def test_runner_activation_checkpointing(kind):
    """mmengine's `activation_checkpointing` (reentrant checkpoints around
    the forwards it names) recomputes the sub-model's function too."""
    got, plain_state, token, drawn = augsub_grads(
        'vit', kind, False, 'two_pass', 1,
        checkpointed=('backbone.layers.0', 'backbone.layers.1'))
    expected = reference_grads('vit', kind, plain_state, token, drawn, 1)
    assert_same_grads(got, expected)


@pytest.mark.parametrize('family', ['vit', 'resnet'])
def test_frozen_stages_are_not_dropped_in_the_sub_pass(family):
    """Blocks in eval mode (frozen_stages) get no drop-path in the sub pass,
    as in the main pass; the reference keeps their slots as they are."""
    got, plain_state, token, drawn = augsub_grads(
        family, 'AugPath', False, 'two_pass', 1, frozen=True)
    expected = reference_grads(family, 'AugPath', plain_state, token,
                               drawn, 1, frozen=True)
    assert_same_grads(got, expected)


def cpu_amp_wrapper(model):
    """mmengine's AmpOptimWrapper on the CPU (bfloat16 autocast): its CUDA
    check is patched, and its CUDA GradScaler replaced by torch's CPU one."""
    from mmengine.optim import AmpOptimWrapper
    path = 'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available'
    with patch(path, return_value=True):
        optim = AmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype='bfloat16')
    optim.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.**8)
    return optim


def max_relative_error(got, expected):
    """Worst, over tensors, of ||got - expected|| / ||expected||: the error
    of each gradient tensor as a whole (one element's bfloat16 rounding
    against the tensor's largest element swung with the CPU's kernels: Swin
    measured 1.8 % earlier, 9.0 % on 2026-12-03, where the norm gives 3.4 %)."""
    return max(float((got[n] - e).norm() / e.norm().clamp(min=1e-12))
               for n, e in expected.items() if e is not None)


@pytest.mark.parametrize('family', ['vit', 'swin', 'resnet'])
def test_gradient_under_cpu_bfloat16_autocast(family):
    got, plain_state, token, drawn = augsub_grads(
        family, 'AugMask', False, 'two_pass', 1,
        optim_wrapper_factory=cpu_amp_wrapper)
    expected = reference_grads(family, 'AugMask', plain_state, token, drawn,
                               1, autocast=torch.bfloat16)
    assert set(got) == set(expected)
    # bfloat16 keeps 8 bits of mantissa: the two sides (two backward passes
    # with a loss scale vs one unscaled autograd call) round differently;
    # measured on 2026-12-03: ResNet identical, Swin 3.4 %, ViT 3.7 % (norm
    # of the difference over the norm of the reference gradient); without
    # the masking (below): 26 %, 261 %, 112 %.
    tolerance = 0.06
    assert max_relative_error(got, expected) < tolerance
    # The tolerance still tells the sub-model apart: the same reference
    # without the masking (a plain second pass) is far outside it.
    unmasked = reference_grads(family, 'none', plain_state, token, [], 1,
                               autocast=torch.bfloat16)
    assert max_relative_error(got, unmasked) > 3 * tolerance
