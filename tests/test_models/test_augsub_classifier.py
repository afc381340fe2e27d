"""AugSubClassifier: the two-pass step, what each branch sees, and the
errors a user gets for configurations that cannot run correctly."""
import copy
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.models import AugSubClassifier
from augsub_mm.models.utils import sub_pass_seed

NUM_CLASSES = 5


def vit_cfg(**backbone):
    return dict(
        type='VisionTransformer',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        img_size=32, patch_size=4, drop_path_rate=0.1, **backbone)


def model_cfg(augsub=None, backbone=None, loss=None, **kwargs):
    head = dict(type='VisionTransformerClsHead', num_classes=NUM_CLASSES,
                in_channels=32)
    if loss is not None:
        head['loss'] = loss
    return dict(
        type='AugSubClassifier',
        augsub=augsub or dict(type='AugMask', ratio=0.5),
        backbone=backbone or vit_cfg(),
        head=head,
        data_preprocessor=dict(num_classes=NUM_CLASSES, mean=[127.5] * 3,
                               std=[127.5] * 3),
        train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                                 dict(type='CutMix', alpha=1.0)]),
        **kwargs)


def batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES)
                      for i in range(n)])


def sgd_wrapper(model, **kwargs):
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                        **kwargs)


def seed_all(seed):
    # Mixup/CutMix draw from numpy, masks and drop-path from torch.
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_with_seed(model, seed=1):
    seed_all(seed)
    optim = sgd_wrapper(model)
    log_vars = model.train_step(batch(), optim)
    return log_vars, {k: v.detach().clone()
                      for k, v in model.state_dict().items()}


class TestTrainStep:

    def test_two_pass_equals_one_backward_of_the_mean(self):
        torch.manual_seed(0)
        two_pass = MODELS.build(model_cfg())
        joint = MODELS.build(model_cfg(step_mode='joint'))
        joint.load_state_dict(two_pass.state_dict())
        before = copy.deepcopy(two_pass.state_dict())
        # Same seed: same Mixup/CutMix draw, drop-path and masks.
        log_a, params_a = step_with_seed(two_pass)
        log_b, params_b = step_with_seed(joint)
        assert torch.allclose(log_a['loss'], log_b['loss'])
        assert torch.allclose(log_a['loss_sub'], log_b['loss_sub'])
        for name, value in params_a.items():
            assert torch.allclose(value, params_b[name], atol=1e-6), name
        # The update really moved the weights (the comparison is not of
        # two untouched models).
        assert any(not torch.equal(params_a[k], v)
                   for k, v in before.items())

    def test_gradient_is_mean_of_main_and_sub_gradients(self):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg())
        reference = copy.deepcopy(model)
        optim = sgd_wrapper(model)
        grads = {}
        real_step = optim.optimizer.step

        def record_step(*args, **kwargs):
            grads.update({n: p.grad.clone()
                          for n, p in model.named_parameters()
                          if p.grad is not None})
            return real_step(*args, **kwargs)
        optim.optimizer.step = MagicMock(side_effect=record_step)
        seed_all(3)
        model.train_step(batch(), optim)

        # The same computation by hand, with the same random draws.
        seed_all(3)
        data = reference.data_preprocessor(batch(), True)
        main_losses, teacher = reference(data['inputs'],
                                         data['data_samples'],
                                         mode='augsub_main')
        with reference.sub_pass(sub_pass_seed(0), 'cpu'):
            sub = reference(data['inputs'], teacher=teacher,
                            mode='augsub_sub')
            ((main_losses['loss'] + sub['loss_sub']) / 2).backward()
        expected = {n: p.grad for n, p in reference.named_parameters()
                    if p.grad is not None}
        assert set(grads) == set(expected)
        for name, grad in expected.items():
            assert torch.allclose(grads[name], grad, atol=1e-6), name
        assert optim.optimizer.step.call_count == 1

    def test_one_count_and_one_step_per_iteration(self):
        model = MODELS.build(model_cfg())
        optim = sgd_wrapper(model)
        step = MagicMock(wraps=optim.optimizer.step)
        optim.optimizer.step = step
        for i in range(3):
            model.train_step(batch(seed=i), optim)
            assert optim._inner_count == i + 1
            assert step.call_count == i + 1

    def test_batch_augment_drawn_once_and_shared(self):
        model = MODELS.build(model_cfg())
        calls = []
        original = model.data_preprocessor.forward

        def counting(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)
        model.data_preprocessor.forward = counting
        seen = []
        model.backbone.patch_embed.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].detach().clone()))
        log_vars = model.train_step(batch(), sgd_wrapper(model))
        assert len(calls) == 1
        assert len(seen) == 2 and torch.equal(seen[0], seen[1])
        assert set(log_vars) >= {'loss', 'loss_sub'}

    def test_no_gradient_through_the_teacher(self):
        model = MODELS.build(model_cfg())
        data = model.data_preprocessor(batch(), True)
        _, teacher = model(data['inputs'], data['data_samples'],
                           mode='augsub_main')
        assert not teacher.requires_grad
        # Even a teacher that carries a graph gets no gradient.
        live = teacher.clone().requires_grad_(True)
        with model.sub_pass(0, 'cpu'):
            sub = model(data['inputs'], teacher=live, mode='augsub_sub')
            sub['loss_sub'].backward()
        assert live.grad is None
        assert model.backbone.patch_embed.projection.weight.grad is not None

    def test_main_pass_sees_all_tokens_sub_pass_half(self):
        model = MODELS.build(model_cfg())
        lengths = []
        model.backbone.layers[0].register_forward_pre_hook(
            lambda m, args: lengths.append(args[0].shape[1]))
        model.train_step(batch(), sgd_wrapper(model))
        # 8x8 patches + class token; the sub pass keeps int(64 * 0.5).
        assert lengths == [65, 33]


class TestLikeImageClassifier:

    def test_eval_modes_and_state_dict_match_plain_classifier(self):
        model = MODELS.build(model_cfg())
        cfg = model_cfg()
        cfg.pop('augsub')
        cfg['type'] = 'ImageClassifier'
        plain = MODELS.build(cfg)
        missing, unexpected = plain.load_state_dict(model.state_dict(),
                                                    strict=True)
        assert not missing and not unexpected
        model.eval()
        plain.eval()
        x = torch.rand(3, 3, 32, 32)
        assert torch.equal(model(x), plain(x))
        assert torch.equal(model(x, mode='tensor'), plain(x, mode='tensor'))
        preds = model(x, mode='predict')
        plain_preds = plain(x, mode='predict')
        for a, b in zip(preds, plain_preds):
            assert torch.equal(a.pred_score, b.pred_score)
        assert isinstance(model, ImageClassifier)


class TestErrors:

    @pytest.mark.parametrize('ratio',
                             [-0.1, 0, 0.0, 1.0, 1.5, 'half', True, None])
    def test_bad_ratio(self, ratio):
        # 0 too: the sub-model would be the main model.
        with pytest.raises(ValueError, match=r'ratio must be a number in '
                           r'\(0, 1\)'):
            MODELS.build(model_cfg(augsub=dict(type='AugMask', ratio=ratio)))

    @pytest.mark.parametrize('kind', ['AugMaskk', 'Mixup', 'ResNet'])
    def test_unknown_sub_model(self, kind):
        with pytest.raises(ValueError, match='Unknown sub-model type.*'
                           'AugMask.*AugDrop.*AugPath'):
            MODELS.build(model_cfg(augsub=dict(type=kind)))

    def test_missing_augsub(self):
        cfg = model_cfg()
        cfg['augsub'] = None
        with pytest.raises(ValueError, match='needs augsub='):
            MODELS.build(cfg)

    @pytest.mark.parametrize('out_type', ['featmap', 'raw'])
    def test_out_type_that_token_drop_cannot_form(self, out_type):
        # Asked for: refused, offering the mask token (the default for
        # these outputs, as for BEiT and EVA-02).
        cfg = model_cfg(backbone=vit_cfg(out_type=out_type))
        cfg['augsub'] = dict(type='AugMask', masking='token_drop')
        with pytest.raises(ValueError, match=f"out_type='{out_type}'.*"
                           "cls_token.*avg_featmap.*masking='mask_token'"):
            MODELS.build(cfg)
        cfg['augsub'] = dict(type='AugMask')
        model = MODELS.build(cfg)
        assert model.augsub.describe(model.backbone).startswith('mask token')

    def test_deit3_avg_featmap_says_mmpretrain_cannot_form_it(self):
        cfg = model_cfg(backbone=vit_cfg(out_type='avg_featmap'))
        cfg['backbone']['type'] = 'DeiT3'
        with pytest.raises(ValueError, match="DeiT3 cannot output "
                           "out_type='avg_featmap', with or without AugSub"):
            MODELS.build(cfg)

    def test_forced_input_masking_accepts_any_out_type(self):
        cfg = model_cfg(augsub=dict(type='AugMask', masking='input',
                                    input_patch_size=32),
                        backbone=vit_cfg(out_type='featmap'),
                        neck=dict(type='GlobalAveragePooling'))
        cfg['head'] = dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                           in_channels=32)
        model = MODELS.build(cfg)
        seen = []
        model.backbone.patch_embed.register_forward_pre_hook(
            lambda m, args: seen.append(args[0]))
        log_vars = model.train_step(batch(size=64), sgd_wrapper(model))
        assert torch.isfinite(log_vars['loss_sub'])
        main, sub = seen
        # 64 px = 2x2 patches of 32 px; ratio 0.5 zeroes 2 per sample.
        quadrants = sub.unflatten(2, (2, 32)).unflatten(4, (2, 32))
        zeroed = (quadrants == 0).flatten(start_dim=1).view(
            4, 3, 2, 32, 2, 32).all(dim=(1, 3, 5)).sum(dim=(1, 2))
        assert zeroed.tolist() == [2, 2, 2, 2]
        assert (main != 0).float().mean() > 0.99

    def test_unknown_masking(self):
        with pytest.raises(ValueError, match='Unsupported AugMask masking'):
            MODELS.build(model_cfg(augsub=dict(type='AugMask',
                                               masking='zero')))

    def test_token_drop_refused_where_tokens_need_their_grid(self):
        backbone = dict(type='MlpMixer', arch=dict(
            embed_dims=32, num_layers=2, tokens_mlp_dims=16,
            channels_mlp_dims=64), patch_size=8, img_size=32)
        with pytest.raises(ValueError, match="masking='token_drop' is not "
                           "available for MlpMixer.*masking='mask_token'"):
            MODELS.build(model_cfg(backbone=backbone, augsub=dict(
                type='AugMask', masking='token_drop')))

    def test_bad_step_mode(self):
        with pytest.raises(ValueError, match="step_mode.*'two_pass'"):
            MODELS.build(model_cfg(step_mode='fast'))


# -- BatchNorm running statistics in the sub pass -----------------------------
def resnet_model_cfg(sub_bn_stats=None, with_cp=False, norm=None, **kwargs):
    """A tiny ResNet classifier masked in 16 px patches (4 per 32 px image);
    ``norm`` is the backbone's norm_cfg."""
    backbone = dict(type='ResNet', depth=18, stem_channels=8,
                    base_channels=8, with_cp=with_cp,
                    norm_cfg=norm or dict(type='BN'))
    cfg = model_cfg(augsub=dict(type='AugMask', ratio=0.5,
                                input_patch_size=16),
                    backbone=backbone, neck=dict(type='GlobalAveragePooling'),
                    **kwargs)
    cfg['head'] = dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                       in_channels=64)
    if sub_bn_stats is not None:
        cfg['sub_bn_stats'] = sub_bn_stats
    return cfg


def running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.split('.')[-1] in ('running_mean', 'running_var',
                                    'num_batches_tracked')}


def main_pass_alone(model, samples, seed):
    """The running statistics of ``model`` after what the main pass of a
    training step does to them: a plain ImageClassifier with the same
    weights and buffers, forward and backward of its loss on the same
    (Mixup/CutMix-ed) batch, with the same random draws."""
    cfg = model_cfg()
    plain_cfg = dict(cfg, type='ImageClassifier', backbone=model.backbone,
                     neck=model.neck, head=model.head)
    plain_cfg.pop('augsub')
    plain = MODELS.build(copy.deepcopy(plain_cfg))
    plain.train()
    seed_all(seed)
    data = plain.data_preprocessor(samples, True)
    losses = plain.loss(data['inputs'], data['data_samples'])
    losses['loss'].backward()  # with_cp: the recompute is part of the pass
    return running_stats(plain)


BN_CASES = [('two_pass', False), ('two_pass', True), ('joint', False)]


class TestSubBnStats:

    @pytest.mark.parametrize('step_mode,with_cp', BN_CASES)
    @pytest.mark.parametrize('norm', [
        dict(type='BN'), dict(type='SyncBN'),
        dict(type='BN', momentum=None)],  # cumulative average
        ids=['BN', 'SyncBN', 'momentum=None'])
    def test_frozen_keeps_the_main_pass_statistics(self, step_mode, with_cp,
                                                   norm):
        torch.manual_seed(0)
        model = MODELS.build(resnet_model_cfg(
            'frozen', with_cp, norm, step_mode=step_mode))
        model.train()
        optim = sgd_wrapper(model)
        for i in range(2):
            samples = batch(seed=i)
            expected = main_pass_alone(model, samples, seed=i)
            seed_all(i)
            model.train_step(samples, optim)
            got = running_stats(model)
            assert set(got) == set(expected)
            for name, value in expected.items():
                assert torch.equal(got[name], value), (i, name)
        # +1 per iteration where no block recomputes its forward: the stem's
        # norm is outside every checkpointed block.
        assert got['backbone.bn1.num_batches_tracked'] == 2
        inner = got['backbone.layer1.0.bn1.num_batches_tracked']
        assert inner == (4 if with_cp else 2)  # the main recompute, as plain
        # The flag is restored after the step.
        assert all(m.track_running_stats for m in model.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._NormBase))

    @pytest.mark.parametrize('step_mode,with_cp', BN_CASES)
    def test_update_is_the_default_and_uses_the_masked_batch(self, step_mode,
                                                             with_cp):
        torch.manual_seed(0)
        model = MODELS.build(resnet_model_cfg(
            None, with_cp, step_mode=step_mode))
        assert model.sub_bn_stats == 'update'
        samples = batch()
        expected = main_pass_alone(model, samples, seed=0)
        seed_all(0)
        model.train_step(samples, sgd_wrapper(model))
        got = running_stats(model)
        assert got['backbone.bn1.num_batches_tracked'] == 2  # both passes
        assert got['backbone.layer1.0.bn1.num_batches_tracked'] == \
            (4 if with_cp else 2)
        # The stem saw the masked batch too: its running statistics moved
        # away from the main pass's (zeroed patches lower the variance).
        assert got['backbone.bn1.running_var'].mean() < \
            expected['backbone.bn1.running_var'].mean()

    @pytest.mark.parametrize('step_mode', ['two_pass', 'joint'])
    def test_same_gradient_in_both_modes(self, step_mode):
        grads = {}
        for mode in ('update', 'frozen'):
            torch.manual_seed(0)
            model = MODELS.build(resnet_model_cfg(mode, step_mode=step_mode))
            optim = sgd_wrapper(model)
            step = optim.optimizer.step

            def record(*args, **kwargs):
                grads[mode] = {n: p.grad.clone()
                               for n, p in model.named_parameters()
                               if p.grad is not None}
                return step(*args, **kwargs)
            optim.optimizer.step = record
            seed_all(0)
            model.train_step(batch(), optim)
        assert set(grads['update']) == set(grads['frozen'])
        for name, grad in grads['update'].items():
            assert torch.equal(grads['frozen'][name], grad), name

    def test_bad_value_names_the_choices(self):
        with pytest.raises(ValueError, match="sub_bn_stats 'main'.*"
                           "'update', 'frozen'"):
            MODELS.build(resnet_model_cfg('main'))

    @pytest.mark.parametrize('case', ['vit', 'untracked BN'])
    def test_frozen_without_running_statistics_is_refused(self, case):
        if case == 'vit':
            cfg = model_cfg(sub_bn_stats='frozen')
        else:
            cfg = resnet_model_cfg('frozen', norm=dict(
                type='BN', track_running_stats=False))
        with pytest.raises(ValueError, match='no normalization layer with '
                           'running statistics.*Remove sub_bn_stats'):
            MODELS.build(cfg)
