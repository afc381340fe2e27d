"""The model zoo's other families: the gradient of an AugSub step equals an
independent reference, as in ``test_exactness.py`` for the paper's families.

For each backbone family added by the family table (mask token after the
patch embedding, token dropping in the ViT relatives, AugDrop on the blocks'
dropout modules, AugPath on their drop-path slots), at a tiny size:

- AugSub's step (``AugSubClassifier.train_step``, SGD) records the gradient
  that reaches ``optimizer.step`` and the masks it drew;
- the reference is a plain ``ImageClassifier`` with the same weights; the
  sub-model is made by hand here (the mask token put at the masked blocks of
  the embedding's output in the layout stated in ``FAMILIES`` below, tokens
  gathered by hand, dropout / drop-path rates set by hand), its masks drawn
  here from the sub pass's documented stream (``sub_pass_seed``) and
  compared with AugSub's; losses by hand; ONE autograd call on
  ``(main + sub) / 2``.
"""
import copy
import math
from functools import partial
from unittest.mock import patch

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.optim import OptimWrapper
from mmpretrain.models.backbones import LeViT, ViTEVA02
from mmpretrain.models.backbones.revvit import RevTransformerEncoderLayer
from mmpretrain.models.utils import BEiTAttention
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.models.families import grid as grid_family
from augsub_mm.models.utils import masking
from test_exactness import (record_step_grads,  # noqa: E402
                            single_label_step_grads, tied_pair)

NUM_CLASSES = 4
RATIO = 0.5
BLOCK_PIXELS = 16  # AugMask(input_patch_size=16): 16 blocks on 64 px
SIZE = 64
# Families whose networks are sized for another input.
SIZES = {'EfficientFormer': 224}
# mmpretrain 1.2's LeViT takes a custom arch only from its table (its dict
# option checks for keys it then does not read): this entry is added to
# LeViT.arch_zoo while the tests run (table_entries).
LEVIT_ARCH = 'augsub-test'
LEVIT_TABLE = {LEVIT_ARCH: dict(embed_dims=[16, 32, 48], num_heads=[2, 2, 2],
                                depths=[1, 1, 1], key_dims=[8, 8, 8])}

# name: (tiny backbone config, AugMask form, where the sub-model masks,
#        output layout of that module, pixels per token there)
FAMILIES = {
    'BEiTViT': (dict(type='BEiTViT', arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=SIZE, patch_size=8, drop_path_rate=0.1,
        layer_scale_init_value=1.0), 'token_drop', 'drop_after_pos',
        'tokens', 8),
    # One bias table for all layers, in the backbone.
    'BEiTViT/shared-bias': (dict(type='BEiTViT', arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=SIZE, patch_size=8, drop_path_rate=0.1,
        use_rel_pos_bias=False, use_shared_rel_pos_bias=True),
        'token_drop', 'drop_after_pos', 'tokens', 8),
    'ViTEVA02': (dict(type='ViTEVA02', arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=SIZE, patch_size=8, drop_path_rate=0.1,
        proj_drop_rate=0.1), 'token_drop', 'drop_after_pos', 'tokens', 8),
    # A plain ViT whose output needs every token: the mask token after the
    # patch embedding, as for BEiT / EVA-02 with this out_type.
    'VisionTransformer/featmap': (dict(type='VisionTransformer', arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=SIZE, patch_size=8, drop_path_rate=0.1, drop_rate=0.1,
        out_type='featmap'), 'mask_token', 'patch_embed', 'tokens', 8),
    'DaViT': (dict(type='DaViT', arch=dict(
        embed_dims=16, depths=[1, 1], num_heads=[1, 2]), window_size=4,
        out_indices=(1, ), drop_path_rate=0.1), 'mask_token', 'patch_embed',
        'tokens', 4),
    'PoolFormer': (dict(type='PoolFormer', arch=dict(
        layers=[1, 1], embed_dims=[16, 32], mlp_ratios=[2, 2],
        layer_scale_init_value=1.0), drop_rate=0.1, drop_path_rate=0.1,
        out_indices=(1, )), 'mask_token', 'patch_embed', 'map', 4),
    'MlpMixer': (dict(type='MlpMixer', arch=dict(
        embed_dims=16, num_layers=2, tokens_mlp_dims=8,
        channels_mlp_dims=32), img_size=SIZE, patch_size=8, drop_rate=0.1,
        drop_path_rate=0.1), 'mask_token', 'patch_embed', 'tokens', 8),
    # Plain (non-distilled) configs: the LinearClsHead of classifier_cfg.
    # Its last stage's attention biases are sized for a 7 x 7 map: run at
    # 224 px (SIZES).
    'EfficientFormer': (dict(type='EfficientFormer', arch=dict(
        layers=[1, 1, 1, 1], embed_dims=[8, 16, 16, 32],
        downsamples=[False, True, True, True], vit_num=1), drop_rate=0.1,
        drop_path_rate=0.1, use_layer_scale=False), 'mask_token',
        'patch_embed', 'map', 4),
    # HiViT sets its output index to the last main block and also matches
    # it against the 6 blocks before the main stage: 7 main blocks.
    'HiViT': (dict(type='HiViT', arch=dict(embed_dims=32, depths=[1, 1, 7],
                                           num_heads=2), img_size=SIZE,
                   drop_rate=0.1, drop_path_rate=0.1),
              'mask_token', 'patch_embed', 'tokens', 16),
    'LeViT': (dict(type='LeViT', arch=LEVIT_ARCH, img_size=SIZE,
                   drop_path_rate=0.1), 'mask_token', 'patch_embed', 'map',
              16),
    'MixMIMTransformer': (dict(type='MixMIMTransformer', arch=dict(
        embed_dims=16, depths=[1, 1], num_heads=[1, 2]), img_size=SIZE,
        window_size=[4, 4], drop_rate=0.1, drop_path_rate=0.1),
        'mask_token', 'patch_embed', 'tokens', 4),
    'MViT': (dict(type='MViT', arch=dict(embed_dims=16, num_layers=2,
                                         num_heads=1, downscale_indices=[1]),
                  img_size=SIZE, drop_path_rate=0.1),
             'mask_token', 'patch_embed', 'tokens', 4),
    'RIFormer': (dict(type='RIFormer', arch=dict(
        layers=[1, 1], embed_dims=[16, 32], mlp_ratios=[2, 2],
        layer_scale_init_value=1.0), drop_path_rate=0.1,
        out_indices=(1, )), 'mask_token', 'patch_embed', 'map', 4),
    'RepMLPNet': (dict(type='RepMLPNet', arch=dict(
        channels=[16, 32], depths=[1, 1], sharesets_nums=[1, 2]),
        img_size=SIZE, out_indices=(1, )), 'mask_token', 'patch_embed',
        'map', 4),
    'TinyViT': (dict(type='TinyViT', arch=dict(
        channels=[16, 16, 32, 32], num_heads=[1, 1, 2, 2],
        depths=[1, 1, 1, 1]),
        img_size=(SIZE, SIZE), window_size=[4, 4, 4, 4], drop_rate=0.1,
        drop_path_rate=0.1), 'mask_token', 'patch_embed', 'map', 4),
    'PCPVT': (dict(type='PCPVT', arch=dict(
        embed_dims=[16, 32], depths=[1, 1], num_heads=[1, 2],
        patch_sizes=[4, 2], strides=[4, 2], mlp_ratios=[2, 2],
        sr_ratios=[2, 1]), out_indices=(1, ), drop_rate=0.1,
        drop_path_rate=0.1), 'mask_token', 'patch_embeds.0', 'tokens', 4),
    'SVT': (dict(type='SVT', arch=dict(
        embed_dims=[16, 32], depths=[1, 1], num_heads=[1, 2],
        patch_sizes=[4, 2], strides=[4, 2], mlp_ratios=[2, 2],
        sr_ratios=[2, 1], window_sizes=[4, 4]), out_indices=(1, ),
        drop_rate=0.1, drop_path_rate=0.1), 'mask_token', 'patch_embeds.0',
        'tokens', 4),
    'XCiT': (dict(type='XCiT', img_size=SIZE, patch_size=16, embed_dims=16,
                  depth=2, cls_attn_layers=1, num_heads=2, drop_rate=0.1,
                  drop_path_rate=0.1), 'mask_token', 'patch_embed', 'tokens',
             16),
    'RevVisionTransformer': (dict(
        type='RevVisionTransformer', arch=dict(
            embed_dims=16, num_layers=2, num_heads=2,
            feedforward_channels=32), img_size=SIZE, patch_size=8,
        drop_rate=0.1, drop_path_rate=0.1, with_cls_token=True,
        out_type='cls_token'),
        'token_drop', 'drop_after_pos', 'tokens', 8),
    'MoCoV3ViT': (dict(type='MoCoV3ViT', arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=SIZE, patch_size=8, drop_rate=0.1, drop_path_rate=0.1,
        out_type='cls_token'), 'token_drop', 'drop_after_pos', 'tokens', 8),
    'T2T_ViT': (dict(type='T2T_ViT', img_size=SIZE, embed_dims=16,
                     num_layers=2, drop_path_rate=0.1,
                     t2t_cfg=dict(token_dims=16),
                     layer_cfgs=dict(num_heads=2, feedforward_channels=32,
                                     drop_rate=0.1)),
                'token_drop', 'drop_after_pos', 'tokens', 16),
}


@pytest.fixture(autouse=True)
def table_entries():
    with patch.dict(LeViT.arch_zoo, LEVIT_TABLE):
        yield


def classifier_cfg(name):
    backbone = FAMILIES[name][0]
    probe = MODELS.build(copy.deepcopy(backbone))
    # In eval mode: LeViT's batch norm cannot train on one 1 x 1 map.
    probe.eval()
    size = SIZES.get(name, SIZE)
    with torch.no_grad():
        out = probe(torch.zeros(1, 3, size, size))[-1]
    if isinstance(out, (tuple, list)):
        out = out[0]
    neck = dict(type='GlobalAveragePooling', dim=out.dim() - 2) \
        if out.dim() > 2 else None
    return dict(
        type='ImageClassifier', backbone=copy.deepcopy(backbone), neck=neck,
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                  in_channels=out.shape[1]),
        data_preprocessor=dict(num_classes=NUM_CLASSES, mean=[127.5] * 3,
                               std=[127.5] * 3))


def batch(name, n=4):
    size = SIZES.get(name, SIZE)
    g = torch.Generator().manual_seed(1000)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES)
                      for i in range(n)])


class Recorder:
    """Every keep-index set and block mask AugSub draws."""

    def __init__(self):
        self.drawn = []

    def record(self, fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.drawn.append(out.clone())
            return out
        return wrapper

    def __enter__(self):
        self.patches = [
            patch.object(masking, 'random_keep_indices',
                         self.record(masking.random_keep_indices)),
            patch.object(grid_family, 'block_mask',
                         self.record(grid_family.block_mask))]
        for p in self.patches:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self.patches:
            p.stop()


def augsub_step(name, kind):
    torch.manual_seed(0)
    cfg = classifier_cfg(name)
    augsub = dict(type=kind, ratio=RATIO)
    if kind == 'AugMask':
        augsub['input_patch_size'] = BLOCK_PIXELS
    cfg.update(type='AugSubClassifier', augsub=augsub)
    model = MODELS.build(cfg)
    model.train()
    for key, param in model.named_parameters():
        if key.endswith('relative_position_bias_table'):
            # Built as zeros: any position would read the same bias.
            param.data.normal_()
    plain = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith('augsub.')}
    token = getattr(model.augsub, 'mask_token', None)
    token = None if token is None else token.detach().clone()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    seen = record_step_grads(model, optim)
    with Recorder() as recorder:
        torch.manual_seed(7)  # the main pass's own drop-path
        model.train_step(batch(name), optim)
    return seen[0], plain, token, recorder.drawn


# -- the sub-model, by hand ------------------------------------------------
def draw_blocks(b, gh, gw, drawn):
    n = gh * gw
    num_masked = n - int(n * (1 - RATIO))
    masked = torch.zeros(b, n, dtype=torch.bool)
    masked.scatter_(1, torch.rand(b, n).argsort(1)[:, :num_masked], True)
    drawn.append(masked.view(b, gh, gw))
    return masked.view(b, gh, gw)


def by_path(module, path):
    for part in path.split('.'):
        module = getattr(module, part)
    return module


def hand_sub_model(name, kind, net, token, drawn):
    _, form, site, layout, stride = FAMILIES[name]
    backbone = net.backbone
    if kind == 'AugDrop':
        for mod_name, m in backbone.named_modules():
            # projection / MLP dropout; attention probabilities and the
            # position dropout are left alone, and so is an attention's
            # out_drop when it is a dropout: mmpretrain applies
            # out_drop(gamma1(proj_drop(x))), one dropout per path
            # (RevViT's attention; the others' out_drop is a DropPath)
            parts = mod_name.split('.')
            if isinstance(m, nn.Dropout) and not {
                    'attn_drop', 'drop_after_pos', 'pos_drop',
                    'position_encoding_drops'}.intersection(parts) and \
                    parts[-2:] != ['attn', 'out_drop']:
                m.p = RATIO
        return []
    if kind == 'AugPath':
        for parent in list(backbone.modules()):
            if isinstance(parent, RevTransformerEncoderLayer):
                # builds its drop-path from this config at every call
                parent.drop_path_cfg = dict(type='DropPath', drop_prob=RATIO)
            for child_name, child in list(parent.named_children()):
                if isinstance(child, DropPath):
                    child.drop_prob = RATIO
                elif child_name == 'drop_path' and \
                        isinstance(child, nn.Identity):
                    setattr(parent, child_name,
                            DropPath(RATIO).train(child.training))
        return []
    if form == 'token_drop':
        def keep(module, args, out):
            B, N, _ = out.shape
            k = int((N - 1) * (1 - RATIO))
            idx = torch.rand(B, N - 1).argsort(1)[:, :k].sort(1)[0]
            drawn.append(idx)
            kept = torch.stack([out[b, 1 + idx[b]] for b in range(B)])
            return torch.cat([out[:, :1], kept], dim=1)

        kept_positions(backbone, drawn)
        return [by_path(backbone, site).register_forward_hook(keep)]

    def replace(module, args, out):
        x, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if layout == 'map':
            B, _, H, W = x.shape
        else:
            B, N = x.shape[:2]
            H = W = math.isqrt(N)
        side = BLOCK_PIXELS // stride
        blocks = draw_blocks(B, -(-H // side), -(-W // side), drawn)
        grid = blocks[:, torch.arange(H) // side][:, :, torch.arange(W) //
                                                  side]
        if layout == 'map':
            x = torch.where(grid[:, None], token.view(1, -1, 1, 1), x)
        else:
            grid = grid.reshape(B, H * W, *[1] * (x.dim() - 2))
            x = torch.where(grid, token, x)
        return (x, *rest) if rest else x

    return [by_path(backbone, site).register_forward_hook(replace)]


def kept_positions(backbone, drawn):
    """Layers that read token positions use those of the kept tokens
    (``drawn[-1]``, patch indices per sample)."""
    for attn in backbone.modules():
        if isinstance(attn, BEiTAttention):
            attn.forward = beit_attention_per_sample(attn, drawn)
    if isinstance(backbone, ViTEVA02):
        backbone.rope.forward = partial(rope_at_kept, backbone.rope, drawn)


def beit_attention_per_sample(attn, drawn):
    """BEiT's attention run on each sample alone, its bias index (and the
    shared bias) cut to the pairs of that sample's tokens (class token
    first)."""
    forward, full = attn.forward, attn.relative_position_index
    window = attn.window_size

    def per_sample(x, rel_pos_bias=None):
        outs = []
        for b, idx in enumerate(drawn[-1]):
            pos = [0] + [1 + int(i) for i in idx]
            if full is not None:
                attn.relative_position_index = full[pos][:, pos]
                attn.window_size = (1, len(pos) - 1)
            shared = None if rel_pos_bias is None else \
                rel_pos_bias[:, pos][:, :, pos]
            outs.append(forward(x[b:b + 1], shared))
        attn.relative_position_index, attn.window_size = full, window
        return torch.cat(outs)

    return per_sample


def rope_at_kept(rope, drawn, x, hw):
    """EVA-02's rotary embedding of (B, heads, K, dims) queries or keys at
    the kept tokens' grid positions."""
    cos = torch.stack([rope.freqs_cos[idx] for idx in drawn[-1]])[:, None]
    sin = torch.stack([rope.freqs_sin[idx] for idx in drawn[-1]])[:, None]
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)
    return x * cos + rotated * sin


def reference_grads(name, kind, plain, mask_token, drawn):
    main_net, sub_net, token = tied_pair(classifier_cfg(name), plain, mask_token)
    own = []
    handles = hand_sub_model(name, kind, sub_net, token, own)
    data = main_net.data_preprocessor(batch(name), True)
    x = data['inputs']
    labels = torch.stack([s.gt_label for s in data['data_samples']])[:, 0]
    grads = single_label_step_grads(
        main_net, lambda x: main_net.head(main_net.extract_feat(x)),
        lambda x: sub_net.head(sub_net.extract_feat(x)), x, labels, own,
        drawn, token)
    for h in handles:
        h.remove()
    return grads


# AugDrop / AugPath where the family has dropout / drop-path slots (the
# others are refused: test_refusals_zoo below).
NO_DROPOUT = ('DaViT', 'LeViT', 'MViT', 'RepMLPNet', 'RIFormer')
NO_DROP_PATH = ('RepMLPNet', )
CASES = [(name, kind) for name in FAMILIES
         for kind in ('AugMask', 'AugDrop', 'AugPath')
         if not (kind == 'AugDrop' and name in NO_DROPOUT)
         and not (kind == 'AugPath' and name in NO_DROP_PATH)]


def os_seeds():
    """``torch.seed()`` (a seed from the operating system) replaced by a
    counter. RevViT's reversible layers reseed the generator from it before
    every dropout and drop-path draw (and replay those seeds in their
    backward): with the same counter, the AugSub step and the reference
    draw the same masks. Other families never call it."""
    count = iter(range(1000, 10**6))

    def seed():
        value = next(count)
        torch.manual_seed(value)
        return value

    return patch.object(torch, 'seed', seed)


@pytest.mark.parametrize('name,kind', CASES)
def test_gradient_equals_the_reference(name, kind):
    with os_seeds():
        got, plain, token, drawn = augsub_step(name, kind)
    if kind == 'AugMask':
        assert drawn, 'AugMask drew no mask'
    with os_seeds():
        expected = reference_grads(name, kind, plain, token, drawn)
    assert set(got) == set(expected)
    for n, grad in expected.items():
        torch.testing.assert_close(got[n], grad, rtol=1e-5, atol=1e-6,
                                   msg=n)
