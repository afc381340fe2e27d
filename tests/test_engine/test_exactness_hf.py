"""transformers models (HuggingFaceClassifier): the gradient of an AugSub
step equals an independent reference, as in ``test_exactness_timm``.

Tiny configs are written to ``tmp_path`` and built offline. The reference
is a plain HuggingFaceClassifier with the same weights; the sub-model is
made here by hand: token drop as a full forward whose ``attention_mask``
masks the dropped tokens as keys (ViT / DeiT read token 0 (and 1), whose
output is then that of the shorter sequence); the mask token through
transformers' own ``bool_masked_pos`` (Swin's SimMIM path: after the
embeddings' norm, before the position embedding); masked input patches
(ResNet, ConvNeXt); drop-path and dropout rates set by hand. Masks are
drawn here from the sub pass's documented stream and compared with
AugSub's; losses by hand; ONE autograd call of (main + sub) / 2.

Also: the switch (the four lines, ``enable_augsub``), the checkpoint into
the plain HuggingFaceClassifier and ``AutoModelForImageClassification``,
and the refusals (an architecture without adapter, a name not found
offline, transformers missing).
"""
import sys
from unittest.mock import patch

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.config import enable_augsub

# tools/setup_env.sh keeps it in <venv>/hf-site (tests/conftest.py).
transformers = pytest.importorskip('transformers')

from test_exactness_timm import InputRecorder  # noqa: E402
from test_exactness import (record_step_grads,  # noqa: E402
                            single_label_step_grads, tied_pair)

NUM_CLASSES = 4
RATIO = 0.5
BLOCK_PIXELS = 8
SIZE = 32
TINY_VIT = dict(image_size=SIZE, patch_size=8, hidden_size=16,
                num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=32, hidden_dropout_prob=0.1)
# name: (config class, arguments, AugMask form)
CONFIGS = {
    'vit': ('ViTConfig', TINY_VIT, 'token_drop'),
    # Set as a hub checkpoint sets it: transformers 5.25's from_config
    # fails on a DeiT config without `architectures`.
    'deit': ('DeiTConfig', dict(
        TINY_VIT, architectures=['DeiTForImageClassificationWithTeacher']),
        'token_drop'),
    'swin': ('SwinConfig', dict(image_size=SIZE, patch_size=4, embed_dim=8,
                                depths=[1, 1], num_heads=[1, 2],
                                window_size=2, drop_path_rate=0.1,
                                hidden_dropout_prob=0.1), 'mask_token'),
    'resnet': ('ResNetConfig', dict(embedding_size=8, hidden_sizes=[8, 16],
                                    depths=[1, 1]), 'input'),
    'convnext': ('ConvNextConfig', dict(num_stages=2, hidden_sizes=[8, 16],
                                        depths=[1, 1], drop_path_rate=0.1),
                 'input'),
}
PREPROCESSOR = dict(num_classes=NUM_CLASSES, mean=[127.5] * 3,
                    std=[127.5] * 3)


def save_config(name, tmp_path, kind=None):
    klass, kwargs, form = CONFIGS[name]
    kwargs = dict(kwargs, num_labels=NUM_CLASSES)
    if kind == 'AugMask' and form == 'token_drop':
        # A dropout draws per token: the shorter sequence draws other
        # numbers than the reference's full one.
        kwargs['hidden_dropout_prob'] = 0.
    path = tmp_path / f'{name}-{kind}'
    getattr(transformers, klass)(**kwargs).save_pretrained(path)
    return str(path)


def plain_cfg(path):
    return dict(type='HuggingFaceClassifier', model_name=path,
                pretrained=False, data_preprocessor=dict(PREPROCESSOR))


def batch(n=4):
    g = torch.Generator().manual_seed(1000)
    return dict(
        inputs=[torch.randint(0, 256, (3, SIZE, SIZE), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES)
                      for i in range(n)])


def augsub_step(path, kind):
    torch.manual_seed(0)
    augsub = dict(type=kind, ratio=RATIO)
    if kind == 'AugMask':
        augsub['input_patch_size'] = BLOCK_PIXELS
    # The four lines merged onto the HuggingFaceClassifier config.
    model = MODELS.build(dict(plain_cfg(path), type='AugSubClassifier',
                              augsub=augsub))
    model.train()
    plain = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith('augsub.')}
    token = getattr(model.augsub, 'mask_token', None)
    token = None if token is None else token.detach().clone()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    seen = record_step_grads(model, optim)
    with InputRecorder() as recorder:
        torch.manual_seed(7)
        model.train_step(batch(), optim)
    return seen[0], plain, token, recorder.drawn, model


def draw_blocks(B, gh, gw, drawn):
    n = gh * gw
    masked = torch.zeros(B, n, dtype=torch.bool)
    masked.scatter_(1, torch.rand(B, n).argsort(1)[
        :, :n - int(n * (1 - RATIO))], True)
    drawn.append(masked.view(B, gh, gw))
    return masked.view(B, gh, gw)


def hand_sub_model(name, kind, net, token, drawn):
    """The sub pass's function of the input, logits out."""
    form = CONFIGS[name][2]
    if kind == 'AugDrop':
        base = net.base_model
        for mod_name, m in base.named_modules():
            if isinstance(m, nn.Dropout) and 'embeddings' not in mod_name:
                m.p = RATIO
        return lambda x: net(x).logits
    if kind == 'AugPath':
        for parent in list(net.modules()):
            for slot, child in list(parent.named_children()):
                if slot != 'drop_path':
                    continue
                if isinstance(child, nn.Identity):
                    setattr(parent, slot,
                            DropPath(RATIO).train(child.training))
                else:
                    child.drop_prob = RATIO
        return lambda x: net(x).logits
    if form == 'token_drop':
        prefix = 2 if name == 'deit' else 1

        def logits(x):
            B = x.shape[0]
            L = (SIZE // 8) ** 2
            idx = torch.rand(B, L).argsort(1)[:, :int(L * (1 - RATIO))]
            drawn.append(idx.sort(1)[0])
            keys = torch.zeros(B, prefix + L, dtype=torch.long)
            keys[:, :prefix] = 1
            keys.scatter_(1, prefix + idx, 1)
            return net(x, attention_mask=keys).logits
        return logits
    if form == 'mask_token':
        emb = net.swin.embeddings
        emb.mask_token = token.view(1, 1, -1)

        def logits(x):
            B = x.shape[0]
            H = W = SIZE // 4
            side = BLOCK_PIXELS // 4
            blocks = draw_blocks(B, H // side, W // side, drawn)
            grid = blocks.repeat_interleave(side, 1).repeat_interleave(
                side, 2)
            out = net.swin(x, bool_masked_pos=grid.reshape(B, H * W))
            return net.classifier(out.pooler_output)
        return logits

    def masked_input(x):
        B = x.shape[0]
        g = SIZE // BLOCK_PIXELS
        blocks = draw_blocks(B, g, g, drawn)
        pixels = blocks.repeat_interleave(BLOCK_PIXELS, 1).repeat_interleave(
            BLOCK_PIXELS, 2)
        return net(x * (~pixels)[:, None]).logits
    return masked_input


def reference_grads(path, name, kind, plain, mask_token, drawn):
    main_net, sub_net, token = tied_pair(plain_cfg(path), plain, mask_token)
    own = []
    sub_logits = hand_sub_model(name, kind, sub_net.model, token, own)
    data = main_net.data_preprocessor(batch(), True)
    x = data['inputs']
    labels = torch.stack([s.gt_label for s in data['data_samples']])[:, 0]
    return single_label_step_grads(
        main_net, lambda x: main_net.model(x).logits, sub_logits, x, labels,
        own, drawn, token)


CASES = [('vit', 'AugMask'), ('vit', 'AugDrop'), ('deit', 'AugMask'),
         ('swin', 'AugMask'), ('swin', 'AugDrop'), ('swin', 'AugPath'),
         ('resnet', 'AugMask'), ('convnext', 'AugMask'),
         ('convnext', 'AugPath')]


@pytest.mark.parametrize('name,kind', CASES)
def test_gradient_equals_the_reference(name, kind, tmp_path):
    path = save_config(name, tmp_path, kind)
    got, plain, token, drawn, model = augsub_step(path, kind)
    assert type(model).__name__ == 'AugSubHuggingFaceClassifier'
    if kind == 'AugMask':
        assert drawn, 'AugMask drew no mask'
        assert model.augsub.describe(model.backbone) == dict(
            token_drop='token drop', mask_token='mask token',
            input='input masking')[CONFIGS[name][2]]
    expected = reference_grads(path, name, kind, plain, token, drawn)
    # Keys: HuggingFaceClassifier's `model.` parameters (+ the mask token).
    assert set(got) == set(expected)
    for n, grad in expected.items():
        torch.testing.assert_close(got[n], grad, rtol=1e-5, atol=1e-6,
                                   msg=n)


def test_enable_augsub_switches_a_hf_config(tmp_path):
    path = save_config('vit', tmp_path)
    cfg = Config(dict(model=plain_cfg(path)))
    enable_augsub(cfg, dict(type='AugMask', ratio=0.5))
    assert cfg.model.type == 'AugSubHuggingFaceClassifier'
    model = MODELS.build(cfg.model)
    assert model.augsub.describe(model.backbone) == 'token drop'


@pytest.mark.parametrize('name', ['vit', 'swin'])
def test_checkpoint_loads_into_hf_classifier_and_auto_model(name, tmp_path):
    path = save_config(name, tmp_path)
    torch.manual_seed(0)
    augsub = dict(type='AugMask', input_patch_size=BLOCK_PIXELS)
    model = MODELS.build(dict(plain_cfg(path), type='AugSubClassifier',
                              augsub=augsub)).train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train_step(batch(), optim)
    state = model.state_dict()
    assert ('augsub.mask_token' in state) == (name == 'swin')
    assert not any(k.startswith('model.') for k in state)
    plain_state = {k: v for k, v in state.items()
                   if not k.startswith('augsub.')}
    src = str(tmp_path / 'augsub.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=plain_state), src)
    plain = MODELS.build(plain_cfg(path))
    load_checkpoint(plain, src, strict=True)
    config = transformers.AutoConfig.from_pretrained(path)
    net = transformers.AutoModelForImageClassification.from_config(config)
    net.load_state_dict(plain_state, strict=True)
    again = MODELS.build(dict(plain_cfg(path), type='AugSubClassifier',
                              augsub=augsub))
    again.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, SIZE, SIZE)
    for m in (model, plain, net, again):
        m.eval()
    with torch.no_grad():
        ref = model(x)
        for other in (plain(x), net(x).logits, again(x)):
            assert torch.equal(other, ref)


def test_vit_augpath_and_cnn_augdrop_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match='AugPath found no drop-path slot '
                       'in the transformers model ViTForImageClassification'):
        MODELS.build(dict(plain_cfg(save_config('vit', tmp_path)),
                          type='AugSubClassifier',
                          augsub=dict(type='AugPath')))
    with pytest.raises(ValueError, match='AugDrop needs dropout layers.*'
                       'ResNetForImageClassification'):
        MODELS.build(dict(plain_cfg(save_config('resnet', tmp_path)),
                          type='AugSubClassifier',
                          augsub=dict(type='AugDrop')))


def test_architecture_without_adapter_is_refused_by_name(tmp_path):
    path = str(tmp_path / 'beit')
    transformers.BeitConfig(
        image_size=SIZE, patch_size=8, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32,
        num_labels=NUM_CLASSES).save_pretrained(path)
    with pytest.raises(ValueError, match='does not train the '
                       'HuggingFaceClassifier model '
                       'BeitForImageClassification.*timm or MMPretrain'):
        MODELS.build(dict(plain_cfg(path), type='AugSubClassifier',
                          augsub=dict(type='AugMask')))


def test_name_not_found_offline_is_refused():
    name = 'augsub-nobody/no-such-model'
    with pytest.raises(TypeError, match='not a timm architecture.*'
                       'no transformers config of that name is found '
                       'offline'):
        MODELS.build(dict(type='AugSubClassifier', model_name=name,
                          augsub=dict(type='AugMask')))
    with pytest.raises(ValueError, match='cannot be read offline'):
        MODELS.build(dict(type='AugSubHuggingFaceClassifier',
                          model_name=name, augsub=dict(type='AugMask')))


def test_missing_transformers_is_refused_by_name(tmp_path):
    path = save_config('vit', tmp_path)
    # `import transformers` raises ImportError, as without the package.
    with patch.dict(sys.modules, {'transformers': None}):
        cfg = Config(dict(model=plain_cfg(path)))
        with pytest.raises(ValueError, match='transformers is not '
                           'installed'):
            enable_augsub(cfg, dict(type='AugMask', ratio=0.5))
        with pytest.raises(TypeError, match='transformers is not '
                           'installed'):
            MODELS.build(dict(plain_cfg(path), type='AugSubClassifier',
                              augsub=dict(type='AugMask')))
        with pytest.raises(ValueError, match='transformers is not '
                           'installed'):
            MODELS.build(dict(plain_cfg(path),
                              type='AugSubHuggingFaceClassifier',
                              augsub=dict(type='AugMask')))


def test_joint_step_with_hf_gradient_checkpointing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="step_mode='joint' cannot be "
                       'combined with gradient checkpointing'):
        MODELS.build(dict(plain_cfg(save_config('vit', tmp_path)),
                          type='AugSubClassifier', with_cp=True,
                          step_mode='joint', augsub=dict(type='AugMask')))
