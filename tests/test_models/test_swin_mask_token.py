"""AugMask on Swin: one learnable mask token in 32 px blocks, kept out of
weight decay whatever the recipe, and checkpoints that load into the plain
model-zoo config."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from augsub_mm.models.families.swin import replace_masked_tokens
from augsub_mm.models.utils import num_kept

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SWIN_AUGMASK_CONFIG = osp.join(REPO, 'configs', 'swin',
                               'swin-tiny_16xb64-augmask_in1k.py')
CONVERTER = osp.join(REPO, 'tools', 'model_converters',
                     'augsub_to_mmpretrain.py')


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    # As in a Runner: configs name mmpretrain's registered types.
    init_default_scope('mmpretrain')


def swin_cfg(img_size=64, window_size=4, augsub=dict(type='AugMask')):
    cfg = dict(
        type='AugSubClassifier',
        augsub=augsub,
        backbone=dict(
            type='SwinTransformer',
            arch=dict(embed_dims=16, depths=[1, 1, 1, 1],
                      num_heads=[1, 1, 1, 1]),
            img_size=img_size,
            window_size=window_size,
            pad_small_map=True),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=128))
    if augsub is None:
        cfg.pop('augsub')
        cfg['type'] = 'ImageClassifier'
    return cfg


def swin(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(swin_cfg(**kwargs))


def allow_training(model):
    """The optimizer check that AugSubOptimWrapperConstructor passes."""
    model.augsub.check_optimizer(torch.optim.SGD([model.augsub.mask_token],
                                                 lr=0.1))


def sub_backward(model):
    """A sub-model forward and backward, as the sub pass runs it."""
    with model.augsub.engage(model.backbone):
        model.backbone(torch.rand(2, 3, 64, 64))[-1].sum().backward()


def tokens_seen(model, x, engaged=True):
    """The token grid entering the first stage (B, H * W, C)."""
    seen = []
    handle = model.backbone.stages[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0]))
    if engaged:
        with model.augsub.engage(model.backbone):
            model.backbone(x)
    else:
        model.backbone(x)
    handle.remove()
    return seen[0]


class TestMaskToken:

    def test_a_parameter_of_the_sub_model(self):
        model = swin()
        token = model.augsub.mask_token
        assert dict(model.named_parameters())['augsub.mask_token'] is token
        # 1-D: the recipes' flat_decay_mult=0.0 keeps it out of weight decay.
        assert token.shape == (16, )
        # Small trunc-normal (std 0.02), not zeros.
        assert 0 < token.std() < 0.05

    # 64 px: 16 x 16 tokens, 2 x 2 blocks; 96 px: 3 x 3 blocks; 200 px: 50
    # tokens a side, 7 blocks of which the last is 2 tokens wide.
    @pytest.mark.parametrize('ratio', [0.25, 0.5, 0.75])
    @pytest.mark.parametrize('img_size,window_size', [(64, 4), (96, 3),
                                                      (200, 5)])
    def test_blocks_of_32_px_and_the_ratio(self, ratio, img_size,
                                           window_size):
        model = swin(img_size=img_size, window_size=window_size,
                     augsub=dict(type='AugMask', ratio=ratio))
        model.train()
        allow_training(model)
        x = torch.rand(6, 3, img_size, img_size)
        torch.manual_seed(1)
        masked_in = tokens_seen(model, x)
        plain = tokens_seen(model, x, engaged=False)
        side = img_size // 4
        grid = -(-side // 8)
        is_token = (masked_in == model.augsub.mask_token).all(-1)
        assert torch.equal(masked_in[~is_token], plain[~is_token])
        is_token = is_token.view(6, side, side)
        blocks = torch.zeros(6, grid, grid, dtype=torch.bool)
        for i in range(grid):
            for j in range(grid):
                block = is_token[:, i * 8:(i + 1) * 8, j * 8:(j + 1) * 8]
                # Whole blocks, partial border blocks included.
                assert torch.equal(block.flatten(1).all(1),
                                   block.flatten(1).any(1))
                blocks[:, i, j] = block.flatten(1).all(1)
        n = grid * grid
        assert blocks.sum(dim=(1, 2)).tolist() == [n - num_kept(n, ratio)] * 6
        assert len({tuple(b.flatten().tolist()) for b in blocks}) > 1

    def test_swin_384_px_window_12(self):
        """The Swin-B 384 px geometry: 96 x 96 tokens are 12 x 12 blocks of
        8 tokens; they need not align with the 12-token windows."""
        model = swin(img_size=384, window_size=12)
        model.train()
        allow_training(model)
        is_token = (tokens_seen(model, torch.rand(1, 3, 384, 384)) ==
                    model.augsub.mask_token).all(-1).view(96, 96)
        blocks = is_token.view(12, 8, 12, 8)
        assert torch.equal(blocks.all(dim=(1, 3)), blocks.any(dim=(1, 3)))
        assert int(blocks.all(dim=(1, 3)).sum()) == 144 - 72

    def test_pure_function(self):
        x = torch.rand(2, 5 * 5, 3)
        token = torch.full((1, 1, 3), -1.)
        out = replace_masked_tokens(x, (5, 5), token, 0.5, block=2)
        # 3 x 3 blocks (border ones 1 token wide), 9 - 4 masked per sample.
        masked = (out == -1).all(-1).view(2, 5, 5)
        counts = torch.zeros(2, 3, 3)
        for i in range(3):
            for j in range(3):
                counts[:, i, j] = masked[:, 2 * i:2 * i + 2,
                                         2 * j:2 * j + 2].flatten(1).all(1)
        assert counts.sum(dim=(1, 2)).tolist() == [5, 5]

    def test_block_must_be_whole_tokens(self):
        with pytest.raises(ValueError, match='input_patch_size=30 must be '
                           'a multiple of the token stride'):
            swin(augsub=dict(type='AugMask', input_patch_size=30))

    def test_forced_input_masking_has_no_token(self):
        model = swin(augsub=dict(type='AugMask', masking='input'))
        assert model.augsub.mask_token is None
        assert 'augsub.mask_token' not in model.state_dict()

    def test_gradient_reaches_the_token_only_through_the_sub_loss(self):
        model = swin()
        model.train()
        allow_training(model)
        x = torch.rand(4, 3, 64, 64)
        samples = [DataSample().set_gt_label(i % 4) for i in range(4)]
        losses, teacher = model(x, samples, mode='augsub_main')
        losses['loss'].backward()
        assert model.augsub.mask_token.grad is None
        with model.sub_pass(0, 'cpu'):
            model(x, teacher=teacher, mode='augsub_sub')['loss_sub'].backward()
        assert model.augsub.mask_token.grad.abs().sum() > 0

    def test_refuses_the_first_step_of_an_optimizer_that_decays_it(self):
        model = swin()
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1,
                                      weight_decay=0.05)
        before = model.augsub.mask_token.detach().clone()
        sub_backward(model)
        with pytest.raises(ValueError, match="flat_decay_mult=0.0"):
            optimizer.step()
        # Refused before anything changed.
        assert torch.equal(model.augsub.mask_token, before)

    def test_an_optimizer_that_does_not_decay_it_passes_at_its_first_step(
            self):
        model = swin()
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        sub_backward(model)
        optimizer.step()
        assert model.augsub._optimizer_checked

    def test_old_checkpoints_with_a_3d_token_load(self):
        model = swin()
        state = model.state_dict()
        state['augsub.mask_token'] = torch.full((1, 1, 16), 3.)
        swin().load_state_dict(state, strict=True)
        loaded = swin()
        loaded.load_state_dict(state)
        assert torch.equal(loaded.augsub.mask_token, torch.full((16, ), 3.))


def groups_by_param(model, optim_wrapper):
    """{parameter name: its group's (lr, weight_decay)}."""
    names = {id(p): n for n, p in model.named_parameters()}
    found = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            assert names[id(p)] not in found, 'in two groups'
            found[names[id(p)]] = (group['lr'], group['weight_decay'])
    return found


class TestOptimizer:

    def recipe(self):
        """optim_wrapper of the Swin-T AugMask config: the zoo recipe's
        AdamW and paramwise_cfg, plus the AugSub constructor."""
        optim_wrapper = Config.fromfile(SWIN_AUGMASK_CONFIG).optim_wrapper
        assert optim_wrapper.constructor == 'AugSubOptimWrapperConstructor'
        assert 'mask_token' not in str(optim_wrapper.paramwise_cfg)
        return optim_wrapper.to_dict()

    def test_zero_decay_group_under_the_recipes_paramwise_cfg(self):
        model = swin()
        cfg = self.recipe()
        ours = groups_by_param(model, build_optim_wrapper(model, cfg))
        cfg.pop('constructor')
        recipe = groups_by_param(model, build_optim_wrapper(model, cfg))
        base_lr, base_wd = cfg['optimizer']['lr'], \
            cfg['optimizer']['weight_decay']
        assert base_wd > 0
        # The token is 1-D: the recipe's flat_decay_mult=0.0 already spares
        # it, so mmpretrain's own launchers need no constructor of ours.
        assert recipe['augsub.mask_token'] == (base_lr, 0.)
        assert ours['augsub.mask_token'] == (base_lr, 0.)
        # Every other parameter exactly as the recipe places it.
        ours.pop('augsub.mask_token')
        recipe.pop('augsub.mask_token')
        assert ours == recipe

    def test_zero_decay_without_any_paramwise_cfg(self):
        model = swin()
        cfg = dict(constructor='AugSubOptimWrapperConstructor',
                   optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
        found = groups_by_param(model, build_optim_wrapper(model, cfg))
        assert found.pop('augsub.mask_token') == (1e-3, 0.)
        assert set(found.values()) == {(1e-3, 0.05)}

    def test_layer_wise_lr_decay_gives_it_the_patch_embedding_lr(self):
        model = swin()
        cfg = dict(
            constructor='AugSubOptimWrapperConstructor',
            base_constructor='LearningRateDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
            paramwise_cfg=dict(layer_decay_rate=0.5))
        optimizer = build_optim_wrapper(model, cfg).optimizer
        group = next(g for g in optimizer.param_groups
                     if g['params'][0] is model.augsub.mask_token)
        embed = next(g for g in optimizer.param_groups
                     if g['params'][0] is
                     model.backbone.patch_embed.projection.weight)
        assert group['weight_decay'] == 0.
        assert group['layer_id'] == embed['layer_id'] == 0
        # 4 blocks + stem + head: layer 0 gets 0.5 ** 5 of the lr.
        assert group['lr'] == embed['lr'] == pytest.approx(1e-3 * 0.5**5)
        assert group['param_name'] == 'augsub.mask_token'

    def test_a_training_step_updates_the_token(self):
        model = swin()
        optim_wrapper = build_optim_wrapper(model, self.recipe())
        before = model.augsub.mask_token.detach().clone()
        data = dict(inputs=[torch.randint(0, 255, (3, 64, 64),
                                          dtype=torch.uint8)] * 4,
                    data_samples=[DataSample().set_gt_label(i % 4)
                                  for i in range(4)])
        model.train()
        log_vars = model.train_step(data, optim_wrapper)
        assert 'loss_sub' in log_vars
        assert not torch.equal(model.augsub.mask_token, before)

    def test_check_rejects_a_decayed_token(self):
        model = swin()
        params = [p for n, p in model.named_parameters()]
        with pytest.raises(ValueError, match=r'weight_decay \[0.05\]'):
            model.augsub.check_optimizer(
                torch.optim.AdamW(params, weight_decay=0.05))

    def test_models_without_sub_model_parameters_unchanged(self):
        torch.manual_seed(0)
        model = MODELS.build(dict(
            type='AugSubClassifier', augsub=dict(type='AugMask'),
            backbone=dict(type='VisionTransformer', arch=dict(
                embed_dims=32, num_layers=2, num_heads=2,
                feedforward_channels=64), img_size=32, patch_size=8),
            head=dict(type='VisionTransformerClsHead', num_classes=4,
                      in_channels=32)))
        cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                   paramwise_cfg=dict(flat_decay_mult=0.))
        plain = groups_by_param(model, build_optim_wrapper(model, cfg))
        ours = groups_by_param(model, build_optim_wrapper(
            model, dict(cfg, constructor='AugSubOptimWrapperConstructor')))
        assert ours == plain

    def test_cannot_wrap_itself(self):
        with pytest.raises(ValueError, match='recipe\'s constructor'):
            build_optim_wrapper(swin(), dict(
                constructor='AugSubOptimWrapperConstructor',
                base_constructor='AugSubOptimWrapperConstructor',
                optimizer=dict(type='SGD', lr=0.1)))


def load_converter():
    spec = importlib.util.spec_from_file_location('augsub_to_mmpretrain',
                                                  CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestCheckpoint:

    def save_augsub_checkpoint(self, path):
        model = swin()
        state = model.state_dict()
        torch.save(dict(
            meta=dict(epoch=1),
            state_dict=state,
            ema_state_dict=dict({f'module.{k}': v
                                 for k, v in state.items()},
                                steps=torch.tensor(3)),
            message_hub=dict()), path)
        return model

    def test_loads_into_the_plain_config_after_conversion(
            self, tmp_path, capsys):
        src, dst = str(tmp_path / 'augsub.pth'), str(tmp_path / 'plain.pth')
        model = self.save_augsub_checkpoint(src)
        plain = MODELS.build(swin_cfg(augsub=None))
        # Unconverted: a strict load names the extra key, a lenient one
        # (mmengine's default) reports it -- never silent.
        with pytest.raises(RuntimeError, match='augsub.mask_token'):
            load_checkpoint(plain, src, strict=True)
        load_checkpoint(plain, src, strict=False)
        assert 'unexpected key in source state_dict: augsub.mask_token' in \
            capsys.readouterr().out

        load_converter().main([src, dst])
        assert 'state_dict: augsub.mask_token' in capsys.readouterr().out
        converted = torch.load(dst, weights_only=True)
        assert set(converted) == {'meta', 'state_dict', 'ema_state_dict'}
        assert 'module.augsub.mask_token' not in converted['ema_state_dict']
        plain = MODELS.build(swin_cfg(augsub=None))
        load_checkpoint(plain, dst, strict=True)
        model.eval()
        plain.eval()
        x = torch.rand(2, 3, 64, 64)
        assert torch.equal(model(x), plain(x))
