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
        with pytest.raises(ValueError, match=f"out_type='{out_type}'.*"
                           "cls_token.*avg_featmap.*masking='input'"):
            MODELS.build(model_cfg(backbone=vit_cfg(out_type=out_type)))

    def test_forced_input_masking_accepts_any_out_type(self):
        cfg = model_cfg(augsub=dict(type='AugMask', masking='input'),
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
