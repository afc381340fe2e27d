"""timm models: the gradient of an AugSub step equals an independent
reference, as in ``test_exactness_zoo``. Through ``TimmClassifier`` (the
switch builds AugSubTimmClassifier) and, for the CNN, ``TIMMBackbone``
inside ``ImageClassifier`` too.

The reference is a plain classifier with the same weights; the sub-model is
made here by hand: token drop as a full forward whose attention masks the
dropped tokens as keys (timm's ``attn_mask``), the class token read (so the
kept tokens' outputs are those of the shorter sequence); the mask token put
at masked blocks of the patch embedding's (B, H, W, C) output (timm's
Swin); masked input patches (a timm CNN); drop-path and dropout rates set
by hand. Masks are drawn here from the sub pass's documented stream and
compared with AugSub's; losses by hand; ONE autograd call.
"""
from unittest.mock import patch

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401
from augsub_mm.models.utils import masking

timm = pytest.importorskip('timm')

from test_exactness_zoo import Recorder, batch  # noqa: E402
from test_exactness import (cpu_amp_wrapper, max_relative_error,  # noqa
                            record_step_grads, single_label_step_grads, tied_pair)

NUM_CLASSES = 4
RATIO = 0.5
BLOCK_PIXELS = 16
SIZE = 64

# name: (timm model and arguments, AugMask form)
MODELS_ = {
    'vit': (dict(model_name='vit_tiny_patch16_224', img_size=SIZE,
                 patch_size=16, depth=2, embed_dim=32, num_heads=2,
                 drop_path_rate=0.1, proj_drop_rate=0.1), 'token_drop'),
    'eva': (dict(model_name='eva02_tiny_patch14_224', img_size=SIZE,
                 patch_size=16, depth=2, embed_dim=32, num_heads=2,
                 drop_path_rate=0.1, proj_drop_rate=0.1), 'token_drop'),
    'swin': (dict(model_name='swin_tiny_patch4_window7_224', img_size=SIZE,
                  window_size=4, depths=(1, 1), num_heads=(1, 2),
                  embed_dim=16, drop_path_rate=0.1, proj_drop_rate=0.1),
             'mask_token'),
    'resnet': (dict(model_name='test_resnet', drop_path_rate=0.1), 'input'),
    # Families found by tools/analysis_tools/timm_coverage.py: CrossViT's
    # two branches (token drop at the pos_drop both call), NaFlexViT
    # (timm's patch-drop site, as Eva's), Qwen3-ViT (the mask token at
    # encoder.patch_embed, an NHWC grid of stride 16).
    'crossvit': (dict(model_name='crossvit_tiny_240', embed_dim=(16, 32),
                      depth=((1, 1, 0), ), num_heads=(2, 2),
                      drop_path_rate=0.1, proj_drop_rate=0.1),
                 'token_drop'),
    'naflexvit': (dict(model_name='naflexvit_base_patch16_gap',
                       img_size=SIZE, depth=2, embed_dim=32, num_heads=2,
                       drop_path_rate=0.1, proj_drop_rate=0.1),
                  'token_drop'),
    'qwen3': (dict(model_name='qwen3_vit_88m', img_size=SIZE, depth=2,
                   embed_dim=32, num_heads=2, drop_path_rate=0.1,
                   proj_drop_rate=0.1), 'mask_token'),
    # TIMMBackbone(features_only=True): timm wraps the ViT in a
    # FeatureGetterNet (child `model`) that returns (B, C, H, W) maps of
    # every token; the mask token at model.patch_embed, not input masking.
    'vit_features': (dict(model_name='vit_tiny_patch16_224', img_size=SIZE,
                          patch_size=16, depth=2, embed_dim=32, num_heads=2,
                          drop_path_rate=0.1, features_only=True,
                          out_indices=(-1, )), 'mask_token'),
    # PVT-v2's embedding permutes to (B, H, W, C) without output_fmt.
    'pvt_v2': (dict(model_name='pvt_v2_b0',
                    depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32),
                    num_heads=(1, 1, 1, 1), drop_path_rate=0.1,
                    proj_drop_rate=0.1), 'mask_token'),
    # A recipe's own patch dropout (timm's PatchDropout, in the main pass
    # too): the sub-model drops its ratio of the tokens that one keeps.
    'vit_patch_drop': (dict(model_name='vit_tiny_patch16_224', img_size=SIZE,
                            patch_size=16, depth=2, embed_dim=32,
                            num_heads=2, drop_path_rate=0.1,
                            patch_drop_rate=0.25), 'token_drop'),
    # Twins: one embedding per stage (patch_embeds), the mask token at the
    # first, which returns ((B, N, C) tokens, grid size).
    'twins': (dict(model_name='twins_svt_small', img_size=SIZE,
                   depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32),
                   num_heads=(1, 1, 1, 1), wss=(4, 4, 4, 4),
                   drop_path_rate=0.1, proj_drop_rate=0.1), 'mask_token'),
}
#: Models whose AugMask form is what their case tests (their AugDrop and
#: AugPath are those of the ViT blocks they are made of).
MASK_ONLY = ('crossvit', 'naflexvit', 'qwen3', 'vit_features', 'pvt_v2',
             'twins', 'vit_patch_drop')
#: The mask token's site and token stride, per mask-token model.
EMBEDS = dict(swin=('patch_embed', 4), qwen3=('encoder.patch_embed', 16),
              vit_features=('model.patch_embed', 16),
              pvt_v2=('patch_embed', 4), twins=('patch_embeds.0', 4))


PREPROCESSOR = dict(num_classes=NUM_CLASSES, mean=[127.5] * 3,
                    std=[127.5] * 3)


def classifier_cfg(name, source='timm', kind=None):
    kwargs = dict(MODELS_[name][0])
    if kind == 'AugMask' and MODELS_[name][1] == 'token_drop':
        # A dropout draws per token: the shorter sequence draws other
        # numbers than the reference's full one (a different mask, not a
        # different function).
        kwargs['proj_drop_rate'] = 0.
    if source == 'timm':
        return dict(type='TimmClassifier', pretrained=False,
                    num_classes=NUM_CLASSES, **kwargs,
                    data_preprocessor=dict(PREPROCESSOR))
    probe = timm.create_model(pretrained=False, num_classes=0, **kwargs)
    return dict(
        type='ImageClassifier',
        backbone=dict(type='TIMMBackbone', pretrained=False, **kwargs),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                  in_channels=probe.feature_info.channels()[-1]
                  if kwargs.get('features_only') else probe.num_features),
        data_preprocessor=dict(PREPROCESSOR))


def timm_model_of(net):
    return net.model if hasattr(net, 'model') else net.backbone.timm_model


def score(net, x, features=None):
    """The classifier's score, through ``features`` (the sub pass by hand:
    input to logits of the timm model, or to its pooled features)."""
    if hasattr(net, 'model'):
        return (features or net.model)(x)
    if features is None:
        return net.head(net.extract_feat(x))
    out = features(x)
    # features_only: the list of maps, the last one pooled.
    out = out[-1] if isinstance(out, (list, tuple)) else out
    return net.head(net.neck((out, )))


class InputRecorder(Recorder):
    """Also the block masks of input masking."""

    def __enter__(self):
        super().__enter__()
        self.patches.append(patch.object(
            masking, 'block_mask', self.record(masking.block_mask)))
        self.patches[-1].start()
        return self


def augsub_step(name, kind, source, optim_factory=None):
    torch.manual_seed(0)
    cfg = classifier_cfg(name, source, kind)
    augsub = dict(type=kind, ratio=RATIO)
    if kind == 'AugMask':
        augsub['input_patch_size'] = BLOCK_PIXELS
    # The switch: the type line of the four lines.
    cfg.update(type='AugSubClassifier', augsub=augsub)
    model = MODELS.build(cfg)
    model.train()
    plain = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith('augsub.')}
    token = getattr(model.augsub, 'mask_token', None)
    token = None if token is None else token.detach().clone()
    optim = optim_factory(model) if optim_factory else OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1))
    seen = record_step_grads(model, optim)
    with InputRecorder() as recorder:
        torch.manual_seed(7)
        model.train_step(batch(name), optim)
    return seen[0], plain, token, recorder.drawn, model


def hand_sub_model(name, kind, timm_model, token, drawn):
    """Returns the sub pass's function of the input (what the timm model
    returns: logits, or unpooled features under TIMMBackbone)."""
    form = MODELS_[name][1]
    if kind == 'none':  # a plain second pass
        return timm_model
    if kind == 'AugDrop':
        for mod_name, m in timm_model.named_modules():
            if isinstance(m, nn.Dropout) and mod_name.split('.')[-1] in (
                    'proj_drop', 'drop1', 'drop2'):
                m.p = RATIO
        return timm_model
    if kind == 'AugPath':
        vit_block = timm.models.vision_transformer.Block
        for parent in list(timm_model.modules()):
            for slot, child in list(parent.named_children()):
                if slot not in ('drop_path', 'drop_path1', 'drop_path2'):
                    continue
                # AugPath runs timm ViT blocks' branches on the kept
                # samples, with mmcv's draw; other slots keep their module
                # at the sub-model's rate (an empty slot gets mmcv's).
                if type(parent) is vit_block or isinstance(child,
                                                           nn.Identity):
                    setattr(parent, slot,
                            DropPath(RATIO).train(child.training))
                else:
                    child.drop_prob = RATIO
        return timm_model
    if name == 'crossvit':
        return crossvit_token_drop(timm_model, drawn)
    if name == 'vit_patch_drop':
        return patch_dropped_token_drop(timm_model, drawn)
    if form == 'token_drop':
        def features(x):
            B = x.shape[0]
            prefix = timm_model.num_prefix_tokens
            # Every token-drop model here has 16 px patches.
            L = (x.shape[-2] // 16) * (x.shape[-1] // 16)
            k = int(L * (1 - RATIO))
            idx = torch.rand(B, L).argsort(1)[:, :k].sort(1)[0]
            drawn.append(idx)
            keys = torch.zeros(B, prefix + L, dtype=torch.bool)
            keys[:, :prefix] = True
            keys.scatter_(1, prefix + idx, True)
            mask = keys[:, None, None, :].expand(-1, 1, prefix + L, -1)
            out = timm_model.forward_features(x, attn_mask=mask)
            # The outputs of the tokens attended to, pooled as the model
            # pools (class token, or the mean over them).
            kept = torch.cat([torch.arange(prefix).expand(B, -1),
                              prefix + idx], dim=1)
            out = out.gather(1, kept[..., None].expand(-1, -1,
                                                       out.shape[-1]))
            return timm_model.forward_head(out)
        return features
    if form == 'mask_token':
        site, stride = EMBEDS[name]

        def replace(module, args, out):
            if isinstance(out, tuple):  # (tokens, grid size): Twins
                return (replace(module, args, out[0]), *out[1:])
            if out.dim() == 3:  # a ViT's (B, N, C) tokens of a square grid
                side = int(out.shape[1] ** 0.5)
                grid = replace(module, args, out.unflatten(1, (side, side)))
                return grid.flatten(1, 2)
            B, H, W, C = out.shape
            side = BLOCK_PIXELS // stride
            gh, gw = -(-H // side), -(-W // side)
            n = gh * gw
            masked = torch.zeros(B, n, dtype=torch.bool)
            masked.scatter_(1, torch.rand(B, n).argsort(1)[
                :, :n - int(n * (1 - RATIO))], True)
            drawn.append(masked.view(B, gh, gw))
            grid = masked.view(B, gh, gw)[:, torch.arange(H) // side][
                :, :, torch.arange(W) // side]
            return torch.where(grid[..., None], token, out)
        timm_model.get_submodule(site).register_forward_hook(replace)
        return timm_model

    def masked_input(x):
        B, _, H, W = x.shape
        g = H // BLOCK_PIXELS
        n = g * g
        masked = torch.zeros(B, n, dtype=torch.bool)
        masked.scatter_(1, torch.rand(B, n).argsort(1)[
            :, :n - int(n * (1 - RATIO))], True)
        drawn.append(masked.view(B, g, g))
        pixels = masked.view(B, g, 1, g, 1).expand(
            -1, -1, BLOCK_PIXELS, -1, BLOCK_PIXELS).reshape(B, H, W)
        return timm_model(x * (~pixels)[:, None])
    return masked_input


def crossvit_token_drop(m, drawn):
    """CrossViT's forward by hand, each branch's patch tokens gathered
    at its kept indices after the position embedding (branch 0's draw,
    then branch 1's), the class tokens kept."""
    from timm.models.crossvit import scale_image

    def features(x):
        B = x.shape[0]
        xs = []
        for i, patch_embed in enumerate(m.patch_embed):
            tokens = patch_embed(scale_image(x, m.img_size_scaled[i],
                                             m.crop_scale))
            cls = (m.cls_token_0 if i == 0 else m.cls_token_1).expand(
                B, -1, -1)
            tokens = torch.cat((cls, tokens), dim=1) + (
                m.pos_embed_0 if i == 0 else m.pos_embed_1)
            L = tokens.shape[1] - 1
            idx = torch.rand(B, L).argsort(1)[:, :int(L * (1 - RATIO))]
            idx = idx.sort(1)[0]
            drawn.append(idx)
            kept = torch.cat([torch.zeros(B, 1, dtype=torch.long), 1 + idx],
                             dim=1)
            xs.append(tokens.gather(1, kept[..., None].expand(
                -1, -1, tokens.shape[-1])))
        for block in m.blocks:
            xs = block(xs)
        return m.forward_head([norm(xs[i]) for i, norm in
                               enumerate(m.norm)])
    return features


def patch_dropped_token_drop(m, drawn):
    """timm's ViT forward by hand, the tokens that timm's own patch
    dropout keeps (its draw first, under the sub pass's seed) gathered at
    the kept indices drawn here, the class token kept."""

    def features(x):
        tokens = m.patch_drop(m._pos_embed(m.patch_embed(x)))
        B, prefix = x.shape[0], m.num_prefix_tokens
        L = tokens.shape[1] - prefix
        idx = torch.rand(B, L).argsort(1)[:, :int(L * (1 - RATIO))]
        idx = idx.sort(1)[0]
        drawn.append(idx)
        patches = tokens[:, prefix:].gather(1, idx[..., None].expand(
            -1, -1, tokens.shape[-1]))
        tokens = torch.cat([tokens[:, :prefix], patches], dim=1)
        return m.forward_head(m.norm(m.blocks(m.norm_pre(tokens))))
    return features


def reference_grads(name, kind, plain, mask_token, drawn, source,
                    autocast=None):
    main_net, sub_net, token = tied_pair(classifier_cfg(name, source, kind), plain, mask_token)
    own = []
    sub_features = hand_sub_model(name, kind, timm_model_of(sub_net),
                                  token, own)
    data = main_net.data_preprocessor(batch(name), True)
    x = data['inputs']
    labels = torch.stack([s.gt_label for s in data['data_samples']])[:, 0]
    return single_label_step_grads(
        main_net, lambda x: score(main_net, x),
        lambda x: score(sub_net, x, sub_features), x, labels, own, drawn,
        token, autocast)


CASES = [(n, k, 'timm') for n in MODELS_
         for k in ('AugMask', 'AugDrop', 'AugPath')
         if not (n == 'resnet' and k == 'AugDrop')
         and not (n in MASK_ONLY and k != 'AugMask')
         and n != 'vit_features'] + [('vit_features', 'AugMask', 'backbone'),
    ('resnet', 'AugMask', 'backbone'), ('resnet', 'AugPath', 'backbone')]


@pytest.mark.parametrize('name,kind,source', CASES)
def test_gradient_equals_the_reference(name, kind, source):
    got, plain, token, drawn, model = augsub_step(name, kind, source)
    assert type(model).__name__ == ('AugSubTimmClassifier' if source ==
                                    'timm' else 'AugSubClassifier')
    if kind == 'AugMask':
        assert drawn, 'AugMask drew no mask'
        assert model.augsub.describe(model.backbone) == dict(
            token_drop='token drop', mask_token='mask token',
            input='input masking')[MODELS_[name][1]]
    expected = reference_grads(name, kind, plain, token, drawn, source)
    assert set(got) == set(expected)
    for n, grad in expected.items():
        torch.testing.assert_close(got[n], grad, rtol=1e-5, atol=1e-6,
                                   msg=n)


@pytest.mark.parametrize('name', ['vit', 'swin'])
def test_gradient_under_cpu_bfloat16_autocast(name):
    """AugMask (token drop, mask token) under mmengine's AmpOptimWrapper
    (bfloat16 autocast on the CPU) against the reference under autocast, as
    for the zoo (test_exactness.py: bfloat16 rounds the two sides apart, so
    a tolerance, which a plain second pass lies far outside)."""
    got, plain, token, drawn, _ = augsub_step(
        name, 'AugMask', 'timm', optim_factory=cpu_amp_wrapper)
    expected = reference_grads(name, 'AugMask', plain, token, drawn, 'timm',
                               autocast=torch.bfloat16)
    assert set(got) == set(expected)
    unmasked = reference_grads(name, 'none', plain, token, [], 'timm',
                               autocast=torch.bfloat16)
    # The whole gradient's error: these tiny models' norm weights get
    # gradients of norm 2e-4, which bfloat16 rounds by 25 % per tensor
    # (measured 2026-12-07: whole-gradient error 1e-6 on the ViT, 1e-3 on
    # Swin; a plain second pass 1.1 and 0.29).
    names = sorted(n for n in expected if unmasked.get(n) is not None)

    def error(a, b):
        a, b = (torch.cat([g[n].flatten() for n in names]) for g in (a, b))
        return float((a - b).norm() / b.norm())

    tolerance = 0.02
    assert error(got, expected) < tolerance
    assert error(got, unmasked) > 5 * tolerance
    if token is not None:  # Swin's mask token, which only the sub pass uses
        assert max_relative_error(
            {'t': got['augsub.mask_token']},
            {'t': expected['augsub.mask_token']}) < tolerance


def test_timm_vit_augpath_skips_work_in_its_blocks():
    model = timm.create_model(pretrained=False, **MODELS_['vit'][0])
    family = augsub_mm.models.families.get_family(model)
    assert len(family.drop_path_sites()) == 4
    assert len(family.residual_branches()) == 4


def test_cnn_augdrop_is_refused_by_name():
    cfg = classifier_cfg('resnet', 'backbone')
    cfg.update(type='AugSubClassifier', augsub=dict(type='AugDrop'))
    with pytest.raises(ValueError, match='AugDrop needs dropout layers'):
        MODELS.build(cfg)
