"""AugSub on MMPretrain's TimmClassifier: the same switch (the four lines,
``enable_augsub`` behind ``tools/train.py --augsub``), the same training
step, the refusals, and checkpoints that are timm's: an AugSub checkpoint
loads into the plain TimmClassifier config and, converted, into
``timm.create_model``; a local timm checkpoint (``checkpoint_path``)
fine-tunes with AugSub. HuggingFaceClassifier: test_exactness_hf.py. The
gradients themselves: tests/test_engine/test_exactness_timm.py."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401
from augsub_mm.config import enable_augsub, prepare_augsub_config
from augsub_mm.models.classifiers import (AugSubClassifier,
                                          AugSubTimmClassifier)
from conftest import REPO

timm = pytest.importorskip('timm')

TOY = osp.join(REPO, 'tests', 'configs', 'timm-vit-tiny_toy.py')
TOY_AUGMASK = osp.join(REPO, 'tests', 'configs',
                       'timm-vit-tiny_augmask_toy.py')
SWIN = dict(model_name='swin_tiny_patch4_window7_224', img_size=64,
            window_size=4, depths=(1, 1), num_heads=(1, 2), embed_dim=16)
VIT = dict(model_name='vit_tiny_patch16_224', img_size=32, patch_size=8,
           depth=2, embed_dim=32, num_heads=2)
PREPROCESSOR = dict(type='mmpretrain.ClsDataPreprocessor', num_classes=4,
                    mean=[127.5] * 3, std=[127.5] * 3)


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def timm_cfg(arch=VIT, **kwargs):
    return dict(type='TimmClassifier', pretrained=False, num_classes=4,
                data_preprocessor=dict(PREPROCESSOR), **arch, **kwargs)


def switched(cfg, **augsub):
    """The type line of the four lines, merged onto ``cfg``."""
    return dict(cfg, type='AugSubClassifier',
                augsub=dict(dict(type='AugMask', ratio=0.5), **augsub))


def batch(size=32, n=4):
    from mmpretrain.structures import DataSample
    return dict(inputs=[torch.randint(0, 256, (3, size, size),
                                      dtype=torch.uint8) for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 4)
                              for i in range(n)])


def test_the_four_lines_build_the_timm_classifier():
    cfg = Config.fromfile(TOY_AUGMASK)
    assert cfg.model.type == 'AugSubClassifier'
    assert cfg.model.model_name == 'vit_tiny_patch16_224'
    model = MODELS.build(cfg.model)
    assert type(model) is AugSubTimmClassifier
    assert model.augsub.describe(model.backbone) == 'token drop'
    # One step function for every model source, not a copy of it.
    for name in ('train_step', 'augsub_train_step', 'sub_pass', 'forward'):
        assert getattr(AugSubTimmClassifier, name) is \
            getattr(AugSubClassifier, name)


def test_enable_augsub_switches_a_timm_config(tmp_path):
    cfg = enable_augsub(Config.fromfile(TOY), dict(type='AugPath', ratio=.3))
    prepare_augsub_config(cfg)
    assert cfg.model.type == 'AugSubTimmClassifier'
    assert cfg.model_wrapper_cfg.type == 'AugSubDistributedDataParallel'
    assert cfg.custom_imports.imports == ['augsub_mm']
    cfg.dump(str(tmp_path / 'saved.py'))
    model = MODELS.build(Config.fromfile(str(tmp_path / 'saved.py')).model)
    assert type(model) is AugSubTimmClassifier
    assert model.augsub.describe(model.backbone) == \
        'drop-path (4 slots, 4 skipping work)'


def test_one_step_trains_and_logs_both_losses():
    torch.manual_seed(0)
    model = MODELS.build(switched(timm_cfg()))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(batch(), optim)
    assert set(log) == {'loss', 'loss_sub'}
    assert all(torch.isfinite(v) for v in log.values())
    assert any(not torch.equal(v, before[k])
               for k, v in model.state_dict().items())
    # Validation is TimmClassifier's.
    model.eval()
    out = model.val_step(batch())
    assert out[0].pred_score.shape == (4, )


def test_auto_mask_token_blocks_are_the_whole_tokens_nearest_32_px():
    """input_patch_size='auto' under mask-token masking, at a token stride
    that does not divide 32 px (14, as DINOv2's and EVA's patches): blocks
    of 2 x 2 tokens (28 px); an explicit 32 is refused there by name."""
    from augsub_mm.models.utils.masking import auto_block_tokens
    assert [auto_block_tokens(s) for s in (4, 8, 14, 16, 7, 64)] == \
        [8, 4, 2, 2, 5, 1]
    p14 = dict(VIT, patch_size=14, img_size=56)  # 4 x 4 tokens
    torch.manual_seed(0)
    model = MODELS.build(switched(timm_cfg(p14), masking='mask_token'))
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train_step(batch(56), optim)  # binds AugMask's hooks
    seen = []
    # After AugMask's own hook: the tokens the blocks see (and the token
    # then: the step updates it).
    model.model.patch_embed.register_forward_hook(
        lambda m, a, out: seen.append(
            (out == model.augsub.mask_token.detach()).all(-1)))
    model.train_step(batch(56), optim)
    main, masked = seen
    assert not main.any()
    blocks = masked.view(4, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).flatten(3)
    # Each 2 x 2 block masked whole or not at all, 2 of the 4 per sample.
    assert (blocks.all(-1) == blocks.any(-1)).all()
    assert blocks.all(-1).sum(dim=(1, 2)).tolist() == [2] * 4
    explicit = MODELS.build(switched(timm_cfg(p14), masking='mask_token',
                                     input_patch_size=32))
    explicit.train()
    with pytest.raises(ValueError, match='input_patch_size=32 must be a '
                       r'multiple of the token stride .*\(14 x 14'):
        explicit.train_step(batch(56), OptimWrapper(
            torch.optim.SGD(explicit.parameters(), lr=0.1)))


def test_non_square_tokens_are_refused_by_name():
    """A token grid of other strides across than down (a non-square
    input's rounding) has no square blocks of whole tokens, 'auto' or not."""
    from augsub_mm.models.families import get_family
    family = get_family(MODELS.build(switched(timm_cfg(SWIN))).backbone)
    for block in (32, 'auto'):
        with pytest.raises(ValueError, match='cannot mask square blocks'
                           r'.* 4 x 8 input pixels per token'):
            family.mask_block_tokens(block, (4, 8))
    assert family.mask_block_tokens('auto', (4, 4)) == 8


def test_plain_training_loss_is_refused_as_for_image_classifiers():
    model = MODELS.build(switched(timm_cfg())).train()
    with pytest.raises(RuntimeError, match='AugSubTimmClassifier was asked '
                       'for a plain training loss'):
        model(torch.rand(2, 3, 32, 32), [], mode='loss')


def test_joint_step_with_timm_grad_checkpointing_is_refused():
    with pytest.raises(ValueError, match="step_mode='joint' cannot be "
                       'combined with gradient checkpointing'):
        MODELS.build(dict(switched(timm_cfg(with_cp=True)),
                          step_mode='joint'))


def test_frozen_bn_stats_without_batch_norm_is_refused():
    with pytest.raises(ValueError, match="sub_bn_stats='frozen'"):
        MODELS.build(dict(switched(timm_cfg()), sub_bn_stats='frozen'))


def test_hugging_face_classifier_not_found_offline_is_refused_by_name():
    # HuggingFaceClassifier configs switch (tests/test_engine/
    # test_exactness_hf.py); a model_name not found offline is refused.
    cfg = Config(dict(model=dict(type='HuggingFaceClassifier',
                                 model_name='google/vit-base-patch16-224')))
    enable_augsub(cfg, dict(type='AugMask', ratio=0.5))
    assert cfg.model.type == 'AugSubHuggingFaceClassifier'
    with pytest.raises(ValueError, match='does not train the '
                       'HuggingFaceClassifier model'):
        MODELS.build(cfg.model)
    # The four lines merged onto it: its model_name is no timm model.
    with pytest.raises(TypeError, match="'google/vit-base-patch16-224' is "
                       'not a timm architecture.*HuggingFaceClassifier'):
        MODELS.build(switched(dict(type='HuggingFaceClassifier',
                                   model_name='google/vit-base-patch16-224')))


def load_converter():
    path = osp.join(REPO, 'tools', 'model_converters',
                    'augsub_to_mmpretrain.py')
    spec = importlib.util.spec_from_file_location('augsub_to_mmpretrain',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('arch, size', [(VIT, 32), (SWIN, 64)],
                         ids=['vit', 'swin'])
def test_checkpoint_loads_into_timm_classifier_and_create_model(
        arch, size, tmp_path):
    torch.manual_seed(0)
    model = MODELS.build(switched(timm_cfg(arch), input_patch_size=16))
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train_step(batch(size), optim)  # the mask token is trained too
    state = model.state_dict()
    has_token = 'augsub.mask_token' in state
    assert has_token == (arch is SWIN)
    # TimmClassifier's keys: the timm model's own, without `model.`.
    assert not any(k.startswith('model.') for k in state)
    src, dst = str(tmp_path / 'augsub.pth'), str(tmp_path / 'plain.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=state), src)

    plain = MODELS.build(timm_cfg(arch))
    if has_token:
        with pytest.raises(RuntimeError, match='augsub.mask_token'):
            load_checkpoint(plain, src, strict=True)
    load_converter().main([src, dst])
    load_checkpoint(plain, dst, strict=True)
    net = timm.create_model(pretrained=False, num_classes=4, **arch)
    net.load_state_dict(torch.load(dst, weights_only=True)['state_dict'])

    # Back into the AugSub classifier (resume): the mask token too.
    again = MODELS.build(switched(timm_cfg(arch), input_patch_size=16))
    load_checkpoint(again, src, strict=True)
    if has_token:
        assert torch.equal(again.augsub.mask_token,
                           state['augsub.mask_token'])
    x = torch.rand(2, 3, size, size)
    for m in (model, plain, net, again):
        m.eval()
    with torch.no_grad():
        ref = model(x)
        for other in (plain(x), net(x), again(x)):
            assert torch.equal(other, ref)


def test_local_timm_checkpoint_fine_tunes_with_augsub(tmp_path):
    torch.manual_seed(1)
    pretrained = timm.create_model(pretrained=False, num_classes=4, **VIT)
    path = str(tmp_path / 'vit_tiny_local.pth')
    torch.save(pretrained.state_dict(), path)
    model = MODELS.build(switched(timm_cfg(checkpoint_path=path)))
    for k, v in pretrained.state_dict().items():
        assert torch.equal(model.model.state_dict()[k], v), k
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(batch(), optim)
    assert torch.isfinite(log['loss_sub'])


def test_ema_copy_of_the_model_trains_and_predicts():
    """The EMA hook deep-copies the model (adapters included)."""
    from mmengine.model import ExponentialMovingAverage
    torch.manual_seed(0)
    model = MODELS.build(switched(timm_cfg(SWIN), input_patch_size=16))
    model.train()
    ema = ExponentialMovingAverage(model, momentum=0.5)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    for _ in range(2):  # mmengine's first update copies, the second averages
        model.train_step(batch(64), optim)
        ema.update_parameters(model)
    key = 'augsub.mask_token'
    assert not torch.equal(ema.module.state_dict()[key],
                           model.state_dict()[key])
    # The copy's sub-model acts on the copy: its sub pass masks what the
    # copy computes, and its plain forward is the copy's (EMA validation).
    copy = ema.module
    copy.eval()  # timm's Swin-T has drop-path 0.1 by default: no draws
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = copy.model(x)
        with copy.sub_pass(0, x.device):
            sub = copy.model(x)
        assert not torch.allclose(sub, plain)
        copy.augsub.check_acted(copy.model)
        assert torch.equal(copy.model(x), plain)
    assert copy.augsub.mask_token is not model.augsub.mask_token
    assert copy.val_step(batch(64))[0].pred_score.shape == (4, )
