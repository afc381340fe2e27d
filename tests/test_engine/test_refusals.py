"""Settings AugSub cannot train exactly stop with an error that names them;
settings that look exotic but can be trained are trained exactly."""
import os
import re
import socket
from unittest.mock import MagicMock, patch

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from mmengine.runner.activation_checkpointing import \
    turn_on_activation_checkpointing
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.checkpoint import register_checkpoint_globals
from augsub_mm.models import AugSubClassifier
from augsub_mm.models.utils import mask_input_patches
from augsub_mm.models.wrappers import AugSubDistributedDataParallel

VIT = dict(type='VisionTransformer',
           arch=dict(embed_dims=16, num_layers=2, num_heads=2,
                     feedforward_channels=32),
           img_size=32, patch_size=8)


def build(backbone=None, head=None, augsub=None, **kwargs):
    return MODELS.build(dict(
        type='AugSubClassifier',
        augsub=augsub or dict(type='AugMask', ratio=0.5),
        backbone=backbone or VIT,
        head=head or dict(type='VisionTransformerClsHead', num_classes=4,
                          in_channels=16),
        data_preprocessor=dict(num_classes=4, mean=[127.5] * 3,
                               std=[127.5] * 3),
        **kwargs))


def batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % 4) for i in range(n)])


def sgd(model):
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))


# -- distributed, world size 1 ------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def world_of_one():
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_world_size_one_default_wrapper_is_refused(world_of_one):
    """mmengine's own DDP wrapper (what `--launcher pytorch` on one GPU or
    `mim train --gpus 1` build without our wrapper line) calls the model's
    plain loss: refused, naming the line to add."""
    model = build()
    ddp = MMDistributedDataParallel(model, device_ids=None)
    with pytest.raises(RuntimeError, match='model_wrapper_cfg'):
        ddp.train_step(batch(), sgd(model))


def test_world_size_one_augsub_wrapper_trains_both_passes(world_of_one):
    model = build()
    ddp = AugSubDistributedDataParallel(model)
    log_vars = ddp.train_step(batch(), sgd(model))
    assert {'loss', 'loss_sub'} <= set(log_vars)


def test_plain_training_loss_is_refused_whatever_the_world_size():
    model = build()
    data = model.data_preprocessor(batch(), False)
    model.train()
    with pytest.raises(RuntimeError, match='model_wrapper_cfg'):
        model.loss(data['inputs'], data['data_samples'])
    model.eval()  # validation losses stay available
    assert 'loss' in model.loss(data['inputs'], data['data_samples'])


def test_static_graph_with_two_pass_is_refused():
    # Refused before DDP is built: no process group needed.
    with pytest.raises(ValueError, match='static_graph'):
        AugSubDistributedDataParallel(build(), static_graph=True)


# -- masking that would mask everything ---------------------------------------
def test_block_masking_every_block_is_refused():
    with pytest.raises(ValueError, match='input_patch_size'):
        mask_input_patches(torch.rand(2, 3, 32, 32), 0.5, patch_size=32)
    resnet = dict(type='ResNet', depth=18, stem_channels=8, base_channels=8)
    # 32 px inputs, 32 px patches: one patch, which ratio 0.5 would mask.
    # 'auto' would follow the input; an explicit size is taken as given.
    model = build(backbone=resnet, neck=dict(type='GlobalAveragePooling'),
                  head=dict(type='LinearClsHead', num_classes=4,
                            in_channels=64),
                  augsub=dict(type='AugMask', ratio=0.5, input_patch_size=32))
    with pytest.raises(ValueError,
                       match=re.escape('keeps no block out of 1 (1 x 1)')):
        model.train_step(batch(), sgd(model))


# -- joint step with gradient checkpointing ------------------------------------
def test_joint_with_with_cp_is_refused_at_build():
    resnet = dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                  with_cp=True)
    with pytest.raises(ValueError, match="step_mode='two_pass'"):
        build(backbone=resnet, neck=dict(type='GlobalAveragePooling'),
              head=dict(type='LinearClsHead', num_classes=4, in_channels=64),
              augsub=dict(type='AugPath', ratio=0.5), step_mode='joint')


def test_joint_with_reversible_layers_is_refused_at_build():
    """RevViT's custom backward recomputes its layers from their outputs,
    reseeding them with the seeds the last forward stored: one backward over
    both passes would recompute the main pass with the sub pass's draws
    (measured: relative gradient error 2.0)."""
    revvit = dict(type='RevVisionTransformer', arch=dict(
        embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=32, patch_size=8, with_cls_token=True, out_type='cls_token')
    with pytest.raises(ValueError, match='reversible layers'):
        build(backbone=revvit, step_mode='joint')
    build(backbone=revvit)  # two_pass: exact (test_exactness_zoo.py)
    # mmpretrain's debugging path without the custom backward: plain autograd.
    build(backbone=dict(revvit, no_custom_backward=True), step_mode='joint')


def test_joint_with_runner_activation_checkpointing_is_refused():
    model = build(step_mode='joint')
    # What the Runner does for `activation_checkpointing` in a config.
    turn_on_activation_checkpointing(model, 'backbone.layers.0')
    with pytest.raises(ValueError, match='with_cp=True, activation_'):
        model.train_step(batch(), sgd(model))


# -- heads ---------------------------------------------------------------------
def arcface_loss_by_hand(feats, weight, labels, s, m):
    """ArcFace (Deng et al. 2019): cos(theta + m) at the target class,
    cos(theta) - m sin(m) where theta + m would pass pi; scaled by s."""
    cosine = F.linear(F.normalize(feats), F.normalize(weight))
    phi = torch.cos(torch.acos(cosine) + m)
    phi = torch.where(cosine > -torch.cos(torch.tensor(m)), phi,
                      cosine - torch.sin(torch.tensor(m)) * m)
    one_hot = F.one_hot(labels, weight.shape[0]).float()
    logits = s * (one_hot * phi + (1 - one_hot) * cosine)
    return F.cross_entropy(logits, labels)


def test_arcface_head_keeps_its_margin():
    vit = dict(VIT, out_type='cls_token')
    model = build(backbone=vit, head=dict(
        type='ArcFaceClsHead', num_classes=4, in_channels=16, margins=0.5,
        scale=16.0))
    samples = batch()
    data = model.data_preprocessor(samples, True)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])[-1]
        expected = arcface_loss_by_hand(feats, model.head.norm_product.weight, labels,
                                        16.0, 0.5)
        plain = F.cross_entropy(model.head(model.extract_feat(
            data['inputs'])), labels)
    log_vars = model.train_step(samples, sgd(model))
    torch.testing.assert_close(log_vars['loss'], expected)
    assert not torch.allclose(expected, plain)  # the margin matters


def test_distilled_efficientformer_head_keeps_its_own_refusal():
    vit = dict(VIT, out_type='cls_token')
    model = build(backbone=vit, head=dict(
        type='EfficientFormerClsHead', num_classes=4, in_channels=16,
        distillation=True))
    with pytest.raises(NotImplementedError, match='distill'):
        model.train_step(batch(), sgd(model))


def test_head_with_several_outputs_and_an_unknown_loss_is_refused():
    """ConformerHead's scores train (each against its own main score:
    test_exactness_conformer.py) because its loss is the sum over them; a
    head that returns several scores with a loss of its own leaves unknown
    what the sub-model should match."""
    from mmpretrain.models import ConformerHead

    class WeightedTwoScoreHead(ConformerHead):
        def _get_loss(self, cls_score, data_samples, **kwargs):
            losses = super()._get_loss(cls_score, data_samples, **kwargs)
            losses['loss'] = losses['loss'] * 0.5
            return losses

    conformer = dict(type='Conformer', arch=dict(
        embed_dims=32, channel_ratio=1, num_heads=2, depths=3),
        patch_size=16, base_channels=8)
    model = build(backbone=conformer,
                  head=WeightedTwoScoreHead(num_classes=4,
                                            in_channels=[32, 32]),
                  augsub=dict(type='AugMask', ratio=0.5, masking='input',
                              input_patch_size=8))
    with pytest.raises(TypeError, match='WeightedTwoScoreHead returns tuple'
                       '.*cannot tell what the sub-model should match'):
        model.train_step(batch(), sgd(model))


def test_multi_task_head_is_refused_by_name():
    """MultiTaskHead has a head and a loss per task, no `loss_module`: it
    used to fail at build with an AttributeError from inside AugSub."""
    task = dict(type='LinearClsHead', num_classes=4, in_channels=16)
    head = dict(type='MultiTaskHead', task_heads=dict(a=task, b=task))
    with pytest.raises(TypeError, match='does not support MultiTaskHead.*'
                       'one head and one loss per task'):
        build(backbone=dict(VIT, out_type='cls_token'), head=head)
    # A built head module too.
    with pytest.raises(TypeError, match='does not support MultiTaskHead'):
        build(backbone=dict(VIT, out_type='cls_token'),
              head=MODELS.build(head))


def test_unknown_head_type_keeps_the_registry_error():
    with pytest.raises(KeyError, match='NoSuchHead'):
        build(head=dict(type='NoSuchHead'))


# -- models that are not image classifiers ------------------------------------
SWITCH_LINES = """
custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
"""
# Zoo configs of self-supervised pre-training, at toy sizes.
SELF_SUPERVISED = {
    'MAE': ('mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py',
            'MAEPretrainHead', 'MAEViT', {
                'model.backbone.arch': dict(
                    _delete_=True, embed_dims=16, num_layers=1,
                    num_heads=2, feedforward_channels=32),
                'model.backbone.img_size': 32,
                'model.backbone.patch_size': 8,
                'model.neck.num_patches': 16, 'model.neck.patch_size': 8,
                'model.neck.embed_dim': 16,
                'model.neck.decoder_embed_dim': 16,
                'model.neck.decoder_depth': 1,
                'model.neck.decoder_num_heads': 2,
                'model.head.patch_size': 8}),
    'SimCLR': ('mmpretrain::simclr/simclr_resnet50_16xb256-coslr-200e_in1k.py',
               'ContrastiveHead', 'ResNet', {
                   'model.backbone.depth': 18,
                   'model.backbone.base_channels': 8,
                   'model.backbone.stem_channels': 8,
                   'model.neck.in_channels': 64,
                   'model.neck.hid_channels': 16,
                   'model.neck.out_channels': 8}),
}


@pytest.mark.parametrize('kind', list(SELF_SUPERVISED))
def test_self_supervised_config_with_the_switch_lines_is_refused(
        kind, tmp_path):
    """The four switch-on lines under a self-supervised pre-training config:
    refused before any step, by our tools/train.py when it prepares the
    config (naming the model type the lines replaced) and by the model
    build under any launcher (mmpretrain's tools/train.py, mim train),
    instead of an unrelated crash at the first step."""
    from augsub_mm.config import prepare_augsub_config
    base, head, backbone, tiny = SELF_SUPERVISED[kind]
    path = tmp_path / f'{kind.lower()}_augmask.py'
    path.write_text(f'_base_ = {base!r}\n' + SWITCH_LINES)
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(tiny)
    cfg.work_dir = str(tmp_path / 'work_dir')
    hint = 'AugSub trains image classifiers \\(ImageClassifier -> ' \
        'AugSubClassifier\\)'
    fine_tune = 'fine-tune config .*mae/benchmarks/'

    # Our tools/train.py: prepare_augsub_config, before the Runner.
    with pytest.raises(TypeError, match=f"{hint}.*the config's model is "
                       f'{kind} \\(from {re.escape(base)}\\).*head {head} '
                       f'is not a classification head.*{fine_tune}'):
        prepare_augsub_config(cfg.copy())

    # mmpretrain's tools/train.py: the Runner builds the model in its
    # constructor, so no Runner (and no step) exists after the refusal.
    train_step = MagicMock()
    with patch.object(AugSubClassifier, 'train_step', train_step), \
            pytest.raises(TypeError) as error:
        Runner.from_cfg(cfg)
    message = str(error.value)
    assert re.search(f'{hint}.*backbone {backbone}.*data_preprocessor '
                     f'SelfSupDataPreprocessor.*head {head} is not a '
                     f'classification head.*{fine_tune}', message), message
    # Not the hint of a masking family, which would crash too.
    assert "masking='input'" not in message
    train_step.assert_not_called()


# -- detect_anomalous_params ---------------------------------------------------
@pytest.mark.parametrize('kind', ['deit3', 'swin'])
def test_detect_anomalous_params_checks_both_passes(kind):
    if kind == 'deit3':
        model = build(backbone=dict(VIT, type='DeiT3'))
    else:
        model = build(
            backbone=dict(type='SwinTransformer', arch=dict(
                embed_dims=16, depths=[1, 1], num_heads=[1, 1]),
                img_size=32, window_size=4, out_indices=(1, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=32),
            augsub=dict(type='AugMask', ratio=0.5, input_patch_size=16))
    model.detect_anomalous_params = True  # as the DDP wrapper's option
    optim = sgd(model)
    model.augsub.check_optimizer(optim.optimizer)
    with patch('mmengine.model.utils.print_log') as log:
        model.train_step(batch(), optim)
    reported = [call.args[0].split(' ')[0] for call in log.call_args_list]
    if kind == 'deit3':
        # mmpretrain 1.2's DeiT3 never uses ln2 (it applies ln1 twice).
        assert reported and all('.ln2.' in name for name in reported)
    else:
        # The mask token is used by the sub pass only: not anomalous.
        assert reported == []


# -- torch version --------------------------------------------------------------
def test_torch_older_than_2_6_is_refused_at_import():
    with patch.object(torch, '__version__', '2.5.1'):
        with pytest.raises(ImportError, match='torch >= 2.6'):
            register_checkpoint_globals()
