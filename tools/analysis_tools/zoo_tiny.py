"""Tiny versions of the zoo's backbone families, for
``zoo_coverage.py --tiny``.

:data:`TINY` maps every backbone type used by a classification config of
mmpretrain's model zoo to overrides of that config's backbone that keep the
family's structure -- the same class, the same kinds of blocks, every stage
present, the recipe's dropout rates -- but make it tiny (8-32 channels in
the first stage, one or two blocks per stage, 64 px inputs: a 2x2 grid of
AugMask's 32 px input blocks), so that a training step takes well under
0.1 s on one CPU thread. :func:`tiny_model` applies an entry to a model
config; the head (and the neck) follow the tiny backbone's output, read by
running it once.

An entry has:

- ``size``: the input size the tiny network is run at (a family whose
  network fixes its input size says why in a comment);
- ``backbone``: keys merged into the config's backbone (dicts merge key by
  key, except ``arch`` and HRNet's ``extra``, which replace the config's:
  the backbone's own custom-arch option);
- ``tables`` (optional): ``{class attribute: shrink}`` -- for the families
  whose sizes live only in a class table (no custom-arch option, or a
  broken one), ``shrink`` maps the table to its tiny version while the
  model is built; see :func:`tables_patched`;
- ``neck`` (optional): ``{neck type: keys}`` merged into that neck;
- ``augsub`` (optional): ``{sub-model type: keys}`` merged into the
  sub-model's config (none needs it now: AugMask's default patches follow
  the input size).

Two rules apply to every family on top of its entry: a backbone that takes
``img_size`` gets ``size``, and a backbone that takes a drop-path rate whose
recipe sets none (or 0) gets :data:`DROP_PATH_RATE`, so that AugPath meets
the drop-path modules a recipe with drop-path builds.

Families that stay bigger (the row's four steps together, two runs of
``python tools/analysis_tools/zoo_coverage.py --tiny`` on 2 shared, loaded
CPU cores, 2026-12-03): VGG (its classifier is fixed at 512x7x7 -> 4096 ->
4096: 6.4-7.2 s), InceptionV3 (a fixed network, at its smallest input, 75
px: 1.7-2.0 s), HRNet (HRFuseScales' fixed 128-1024 channels: 0.9-1.6 s).
The other 59 rows take 0.0-0.7 s each; the whole run 50 s, half of it
mmengine parsing the zoo's configs.
"""
import copy
import inspect
from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

DROP_PATH_RATE = 0.1
# A head's hidden layers: kept, but at tiny width.
HEAD_HIDDEN = dict(hidden_dim=32, mid_channels=32)

# Plain ViT-like archs at 64 px and the zoo's patch size 16: 4x4 tokens (a
# 2x2 grid of AugMask's 32 px input blocks), 2 layers so that the
# drop-path rule's linear ramp (0 for the first block) leaves a block with
# a real drop-path module.
VIT = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
# ResNet-like families: 8 stem/base channels.
RESNET = dict(stem_channels=8, base_channels=8)


def one_block_per_stage(table: dict) -> dict:
    """A ResNet-style ``arch_settings`` (depth -> (block, blocks per stage))
    with one block per stage."""
    return {depth: (block, (1, ) * len(stages))
            for depth, (block, stages) in table.items()}


def csp_shrunk(depth: int, **sizes):
    """A CSPNet table whose entry ``depth`` takes ``sizes`` (its block
    class and the rest of its recipe kept)."""
    return lambda table: {**table, depth: dict(table[depth], **sizes)}


TINY: Dict[str, dict] = {
    # --- plain ViTs ------------------------------------------------------
    'BEiTViT': dict(size=64, backbone=dict(arch=VIT)),
    'DeiT3': dict(size=64, backbone=dict(arch=VIT)),
    'DistilledVisionTransformer': dict(size=64, backbone=dict(arch=VIT)),
    'VisionTransformer': dict(size=64, backbone=dict(arch=VIT)),
    # A linear-probe recipe: every block stays frozen, as in the zoo.
    'MoCoV3ViT': dict(size=64, backbone=dict(arch=VIT, frozen_stages=2)),
    'RevVisionTransformer': dict(size=64, backbone=dict(arch=VIT)),
    # Patch 16 instead of EVA-02's 14, which does not divide 64 px.
    'ViTEVA02': dict(size=64, backbone=dict(arch=VIT, patch_size=16)),
    # The recipe fine-tunes a checkpoint, which cannot fit a tiny arch:
    # the tiny one starts from its random initialization.
    'LoRAModel': dict(size=64, backbone=dict(module=dict(
        arch=VIT, img_size=64, drop_path_rate=DROP_PATH_RATE,
        init_cfg=None), rank=4)),
    'XCiT': dict(size=64, backbone=dict(
        embed_dims=32, depth=2, cls_attn_layers=1, num_heads=2,
        patch_size=16)),
    'T2T_ViT': dict(size=64, backbone=dict(
        embed_dims=32, num_layers=2, t2t_cfg=dict(token_dims=16),
        layer_cfgs=dict(num_heads=2, feedforward_channels=64))),
    # 16 outer patches of 4x4 inner pixels.
    'TNT': dict(size=64, backbone=dict(arch=dict(
        embed_dims_outer=32, embed_dims_inner=8, num_layers=2,
        num_heads_outer=2, num_heads_inner=2))),
    # The token-mixing MLP is sized by img_size / patch_size: 16 tokens.
    'MlpMixer': dict(size=64, backbone=dict(arch=dict(
        embed_dims=32, num_layers=2, tokens_mlp_dims=16,
        channels_mlp_dims=64))),
    'Conformer': dict(size=64, backbone=dict(
        # depths 6: the smallest with every stage (depths // 3 - 1, then
        # depths // 3 twice, conv-transformer blocks).
        arch=dict(embed_dims=32, depths=6, num_heads=2, channel_ratio=1),
        base_channels=8)),
    # --- hierarchical transformers ---------------------------------------
    # 64 px and windows of 2: stage maps 16, 8, 4, 2, as many windows per
    # map as the zoo's 224 px and windows of 7 (a shifted block after each
    # plain one, except in the last stage's single window).
    'SwinTransformer': dict(size=64, backbone=dict(
        arch=dict(embed_dims=8, depths=[2, 2, 2, 2],
                  num_heads=[1, 1, 2, 2]), window_size=2)),
    'SwinTransformerV2': dict(size=64, backbone=dict(
        arch=dict(embed_dims=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2],
                  extra_norm_every_n_blocks=0), window_size=2)),
    'DaViT': dict(size=64, backbone=dict(
        arch=dict(embed_dims=8, depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2]), window_size=2)),
    'MixMIMTransformer': dict(size=64, backbone=dict(
        arch=dict(embed_dims=8, depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2]), window_size=[4, 4, 4, 2])),
    # Patches of 16 in 4x4 inner patches: 4x4 tokens. 7 main blocks:
    # mmpretrain 1.2's HiViT also matches its output index (the last main
    # block) against the 6 blocks before the main stage.
    'HiViT': dict(size=64, backbone=dict(
        arch=dict(embed_dims=32, depths=[1, 1, 7], num_heads=2))),
    'MViT': dict(size=64, backbone=dict(arch=dict(
        embed_dims=8, num_layers=4, num_heads=1,
        downscale_indices=[1, 2, 3]))),
    'PCPVT': dict(size=64, backbone=dict(arch=dict(
        embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2], patch_sizes=[4, 2, 2, 2],
        strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
        sr_ratios=[8, 4, 2, 1]))),
    # 2 blocks per stage: locally-grouped, then global sub-sampled.
    'SVT': dict(size=64, backbone=dict(arch=dict(
        embed_dims=[8, 16, 24, 32], depths=[2, 2, 2, 2],
        num_heads=[1, 1, 2, 2], patch_sizes=[4, 2, 2, 2],
        strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
        sr_ratios=[8, 4, 2, 1], window_sizes=[4, 4, 4, 4]))),
    'TinyViT': dict(size=64, backbone=dict(
        arch=dict(channels=[8, 16, 24, 32], num_heads=[1, 1, 2, 2],
                  depths=[1, 1, 1, 1]), window_size=[4, 4, 4, 2])),
    # Attention biases are sized by img_size // 16: 4, 2, 1. The
    # custom-arch option of mmpretrain 1.2's LeViT cannot work (it checks
    # for keys it then does not read), so the table entry is replaced.
    'LeViT': dict(size=64, backbone=dict(arch='128s'), tables=dict(
        arch_zoo=lambda table: dict(table, **{'128s': dict(
            embed_dims=[16, 24, 32], num_heads=[2, 3, 4], depths=[1, 1, 1],
            key_dims=[8, 8, 8])}))),
    # The Meta3D attention's biases are sized for a 7x7 map: 224 px.
    'EfficientFormer': dict(size=224, backbone=dict(arch=dict(
        layers=[1, 1, 1, 2], embed_dims=[8, 16, 24, 32],
        downsamples=[False, True, True, True], vit_num=1))),
    # 2 blocks in stages 2-4: a conv encoder, then the global SDTA block.
    'EdgeNeXt': dict(size=64, backbone=dict(arch=dict(
        channels=[16, 24, 32, 48], depths=[1, 2, 2, 2],
        num_heads=[2, 2, 2, 2]))),
    # --- graph / MLP ------------------------------------------------------
    # Position embeddings sized for 224 px (14x14 nodes, 56x56 at 1/4);
    # no custom-arch option (arch names a table entry): the entry shrinks.
    'Vig': dict(size=224, backbone=dict(arch='tiny'), tables=dict(
        arch_settings=lambda table: dict(
            table, tiny=dict(num_blocks=2, channels=16)))),
    'PyramidVig': dict(size=224, backbone=dict(arch='tiny'), tables=dict(
        arch_settings=lambda table: dict(table, tiny=dict(
            blocks=[1, 1, 1, 1], channels=[8, 16, 24, 32])))),
    # The MLPs are sized by img_size: stage maps 16, 8, 4, 2.
    'RepMLPNet': dict(size=64, backbone=dict(arch=dict(
        channels=[8, 16, 24, 32], depths=[1, 1, 1, 1],
        sharesets_nums=[1, 2, 4, 8]))),
    # --- modern convnets (64 px: a 2x2 grid of AugMask's 32 px blocks) ----
    'ConvNeXt': dict(size=64, backbone=dict(arch=dict(
        depths=[1, 1, 1, 1], channels=[8, 16, 24, 32]))),
    'ConvMixer': dict(size=64, backbone=dict(arch=dict(
        embed_dims=32, depth=2, patch_size=4, kernel_size=5))),
    'PoolFormer': dict(size=64, backbone=dict(arch=dict(
        layers=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32],
        mlp_ratios=[4, 4, 4, 4], layer_scale_init_value=1e-5))),
    'RIFormer': dict(size=64, backbone=dict(arch=dict(
        layers=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32],
        mlp_ratios=[4, 4, 4, 4], layer_scale_init_value=1e-5))),
    'VAN': dict(size=64, backbone=dict(arch=dict(
        embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1],
        ffn_ratios=[8, 8, 4, 4]))),
    # gnconv of order 5 in the last stage needs a width divisible by 16.
    'HorNet': dict(size=64, backbone=dict(arch=dict(
        base_dim=8, depths=[1, 1, 1, 1], orders=[2, 3, 4, 5],
        dw_cfg=[dict(type='DW', kernel_size=7)] * 4))),
    'RepLKNet': dict(size=64, backbone=dict(arch=dict(
        large_kernel_sizes=[13, 11, 9, 7], layers=[1, 1, 1, 1],
        channels=[8, 16, 24, 32], small_kernel=5, dw_ratio=1))),
    # [type, channels, stride, (expand) | (transformer dim, ffn dim,
    # blocks, expand)]: the xx_small layout at a third of its width.
    'MobileViT': dict(size=64, backbone=dict(arch=[
        ['mobilenetv2', 8, 1, 1, 2], ['mobilenetv2', 16, 2, 1, 2],
        ['mobilevit', 24, 2, 32, 64, 1, 2],
        ['mobilevit', 32, 2, 32, 64, 1, 2],
        ['mobilevit', 32, 2, 32, 64, 1, 2]], stem_channels=8)),
    # --- re-parametrizable convnets ---------------------------------------
    'RepVGG': dict(size=64, backbone=dict(arch=dict(
        num_blocks=[1, 1, 1, 1], width_factor=[1, 1, 2, 4],
        group_layer_map=None, se_cfg=None), base_channels=8)),
    'MobileOne': dict(size=64, backbone=dict(arch=dict(
        num_blocks=[1, 1, 1, 1], width_factor=[0.125, 0.125, 0.125, 0.125],
        num_conv_branches=[2, 2, 2, 2], num_se_blocks=[0, 0, 0, 0]))),
    # --- ResNets: 8 base channels, the depth table at one block per stage -
    'ResNet': dict(size=64, backbone=RESNET,
                   tables=dict(arch_settings=one_block_per_stage)),
    'ResNet_CIFAR': dict(size=64, backbone=RESNET,
                         tables=dict(arch_settings=one_block_per_stage)),
    'ResNetV1c': dict(size=64, backbone=RESNET,
                      tables=dict(arch_settings=one_block_per_stage)),
    'ResNetV1d': dict(size=64, backbone=RESNET,
                      tables=dict(arch_settings=one_block_per_stage)),
    'ResNeXt': dict(size=64, backbone=dict(RESNET, groups=2,
                                           width_per_group=4),
                    tables=dict(arch_settings=one_block_per_stage)),
    'SEResNet': dict(size=64, backbone=RESNET,
                     tables=dict(arch_settings=one_block_per_stage)),
    'SEResNeXt': dict(size=64, backbone=dict(RESNET, groups=2,
                                             width_per_group=4),
                      tables=dict(arch_settings=one_block_per_stage)),
    'Res2Net': dict(size=64, backbone=dict(RESNET, scales=4,
                                           base_width=26),
                    tables=dict(arch_settings=one_block_per_stage)),
    'ResNeSt': dict(size=64, backbone=RESNET,
                    tables=dict(arch_settings=one_block_per_stage)),
    # Widths 8, 16, 24, 40: one block in each of the 4 stages.
    'RegNet': dict(size=64, backbone=dict(arch=dict(
        w0=8, wa=10.0, wm=1.5, group_w=8, depth=4, bot_mul=1.0),
        stem_channels=8, base_channels=8)),
    'DenseNet': dict(size=64, backbone=dict(arch=dict(
        growth_rate=8, depths=[1, 1, 1, 1], init_channels=16))),
    'HRNet': dict(size=64, backbone=dict(extra=dict(
        stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                    num_blocks=(1, ), num_channels=(8, )),
        stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                    num_blocks=(1, 1), num_channels=(8, 16)),
        stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                    num_blocks=(1, 1, 1), num_channels=(8, 16, 24)),
        stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                    num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 24, 32)))),
        neck=dict(HRFuseScales=dict(out_channels=32))),
    # CSPNets have no custom-arch option: their one table entry shrinks.
    'CSPDarkNet': dict(size=64, backbone=dict(), tables=dict(
        arch_settings=csp_shrunk(
            53, in_channels=(8, 8, 16, 24, 32),
            out_channels=(8, 16, 24, 32, 32), num_blocks=(1, 1, 1, 1, 1)))),
    'CSPResNet': dict(size=64, backbone=dict(), tables=dict(
        arch_settings=csp_shrunk(
            50, in_channels=(8, 16, 24, 32), out_channels=(16, 24, 32, 32),
            num_blocks=(1, 1, 1, 1)))),
    # The zoo's channels / 8, and ResNeXt blocks of 4 groups.
    'CSPResNeXt': dict(size=64, backbone=dict(), tables=dict(
        arch_settings=csp_shrunk(
            50, in_channels=(8, 32, 64, 128), out_channels=(32, 64, 128, 256),
            num_blocks=(1, 1, 1, 1),
            block_args=dict(base_channels=4, groups=4)))),
    # --- mobile convnets: the recipe's width knob, or the table -----------
    'MobileNetV2': dict(size=64, backbone=dict(widen_factor=0.25)),
    # Neither: the zoo's 'small' arch as it is (about 0.1 s a step).
    'MobileNetV3': dict(size=64, backbone=dict()),
    'ShuffleNetV1': dict(size=64, backbone=dict(widen_factor=0.5)),
    'ShuffleNetV2': dict(size=64, backbone=dict(widen_factor=0.5)),
    # EfficientNet scales width and depth by its table: a quarter of b0's.
    'EfficientNet': dict(size=64, backbone=dict(arch='b0'), tables=dict(
        arch_settings=lambda table: dict(table, b0=(0.25, 0.25, 64)))),
    'EfficientNetV2': dict(size=64, backbone=dict(arch='b0'), tables=dict(
        arch_settings=lambda table: dict(table, b0=[
            [1, k, s, e, max(8, i // 4), max(8, o // 4), se, t]
            if t != -2 else [1, k, s, e, max(8, i // 4), 32, se, t]
            for n, k, s, e, i, o, se, t in table['b0']]))),
    # --- fixed networks: nothing to shrink ---------------------------------
    # 75 px is the smallest input InceptionV3's stem and pools accept.
    'InceptionV3': dict(size=75, backbone=dict()),
    # LeNet-5 reads exactly 32 px (its last conv leaves 1x1): AugMask's
    # default patches follow the input (5 px, the paper's 7 x 7 grid).
    'LeNet5': dict(size=32, backbone=dict()),
    # The classifier is fixed (512x7x7 -> 4096 -> 4096, 120M parameters:
    # the one family that stays big). It reads 512 channels at 7x7: 112 px
    # through the first 4 stages (the 4th already has 512 channels) of the
    # smallest depth, one conv per stage.
    'VGG': dict(size=112, backbone=dict(
        depth=11, num_stages=4, dilations=(1, 1, 1, 1), out_indices=(4, )),
        tables=dict(arch_settings=lambda table: {
            **table, 11: (1, 1, 1, 1, 1)})),
}


def _takes(cls: type, name: str) -> bool:
    """Whether building ``cls`` accepts the keyword ``name`` (following
    ``**kwargs`` up the class hierarchy)."""
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if name in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False


# Keys whose tiny value replaces the config's instead of merging into it.
REPLACED = ('arch', 'extra')


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) \
                and key not in REPLACED:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def entry(family: str) -> dict:
    """The :data:`TINY` entry of ``family``; an error naming it if there is
    none."""
    if family not in TINY:
        raise KeyError(
            f'No tiny version of the backbone family {family!r}: add an '
            f'entry for it to TINY in {__file__} (a new family of the '
            'installed mmpretrain, or a renamed one). Families with an '
            f'entry: {sorted(TINY)}')
    return TINY[family]


@contextmanager
def tables_patched(family: str) -> Iterator[None]:
    """Shrink, while the model is built, the backbone class's architecture
    tables that the family's ``tables`` names (each maps the class's table
    to its tiny version). Re-entrant: inside an active patch of the same
    family, nothing more is done (shrinking twice would shrink more)."""
    from mmpretrain.registry import MODELS
    tables = entry(family).get('tables', {})
    if not tables or family in _PATCHED:
        yield
        return
    cls = MODELS.get(family)
    saved = {}
    for attr, shrink in tables.items():
        saved[attr] = vars(cls).get(attr), attr in vars(cls)
        setattr(cls, attr, shrink(copy.deepcopy(getattr(cls, attr))))
    _PATCHED.add(family)
    try:
        yield
    finally:
        _PATCHED.discard(family)
        for attr, (value, own) in saved.items():
            if own:
                setattr(cls, attr, value)
            else:
                delattr(cls, attr)


# Families whose tables are shrunk right now.
_PATCHED = set()


def _channels(feats) -> Tuple:
    """Channels of the last output of a backbone or neck (a tuple when that
    output is itself a tuple, e.g. Conformer's conv and transformer
    features, DeiT's class and distillation tokens)."""
    last = feats[-1] if isinstance(feats, (tuple, list)) else feats
    if isinstance(last, (tuple, list)):
        return tuple(t.shape[1] for t in last)
    return (last.shape[1], )


def tiny_model(model_cfg: dict) -> Tuple[dict, int]:
    """``model_cfg`` with its backbone replaced by the family's tiny version
    and the neck and head following it; and the input size to run it at.

    The backbone is built and run once on a zero batch to read the
    channels of its output (and of the neck's); the head keeps its type,
    loss and number of classes.
    """
    import torch
    from mmpretrain.registry import MODELS
    family = model_cfg['backbone']['type']
    spec = entry(family)
    size = spec['size']
    cls = MODELS.get(family)
    backbone = _merge(model_cfg['backbone'], spec.get('backbone', {}))
    if _takes(cls, 'img_size'):
        old = backbone.get('img_size')
        backbone['img_size'] = (size, size) if isinstance(
            old, (tuple, list)) else size
    for key in ('drop_path_rate', 'drop_path'):
        if _takes(cls, key):
            if not backbone.get(key):
                backbone[key] = DROP_PATH_RATE
            break
    necks = model_cfg.get('neck') or []
    single_neck = isinstance(necks, dict)
    necks = [_merge(one, spec.get('neck', {}).get(one['type'], {}))
             for one in ([necks] if single_neck else necks)]
    head = dict(model_cfg['head'])
    if 'in_channels' in head or any('in_channels' in n for n in necks):
        mean = (model_cfg.get('data_preprocessor') or {}).get('mean') or \
            [0] * 3
        with tables_patched(family), torch.no_grad():
            # Not `.eval()` chained: several backbones' train() returns
            # None.
            net = MODELS.build(backbone)
            net.eval()
            feats = net(torch.zeros(1, len(mean), size, size))
            for one in necks:
                if 'in_channels' in one:
                    channels = tuple(t.shape[1] for t in feats)
                    # HRFuseScales takes every branch's channels.
                    one['in_channels'] = type(one['in_channels'])(
                        channels) if isinstance(
                            one['in_channels'],
                            (tuple, list)) else channels[-1]
                neck_net = MODELS.build(one)
                neck_net.eval()
                feats = neck_net(feats)
        if 'in_channels' in head:
            channels = _channels(feats)
            head['in_channels'] = list(channels) if isinstance(
                head['in_channels'], (tuple, list)) else channels[0]
    for key, width in HEAD_HIDDEN.items():
        if head.get(key) is not None:
            head[key] = [width] * len(head[key]) if isinstance(
                head[key], (tuple, list)) else width
    model_cfg = dict(model_cfg, backbone=backbone, head=head)
    if necks:
        model_cfg['neck'] = necks[0] if single_neck else necks
    return model_cfg, size
