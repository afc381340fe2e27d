"""Show what AugMask's sub-model sees, for a config's backbone.

`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_: the sub-model runs on the same batch
as the main model, with part of it masked. This tool runs the config's
model (randomly initialised: masks do not depend on weights) through the
real AugMask code under ``augsub.engage(backbone)`` and draws, next to each
input image, what reached the backbone:

- plain ViT / DeiT-III (token dropping): the patches whose tokens were
  dropped, greyed out; read by comparing the token sequence at
  ``patch_embed`` / ``drop_after_pos`` with that of a clean forward;
- Swin (mask token): the blocks replaced by the learnable mask token, in
  blue; read the same way;
- ResNet and other CNNs (input masking): the masked input itself, as the
  backbone received it (masked patches are zero, the dataset mean colour).

Example::

    python tools/visualization/vis_augsub.py \\
        configs/fashion_mnist/vit-tiny-p4_1xb64-augmask_fashion-mnist-2k.py \\
        --out vit_augmask.png
"""
import argparse
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

#: Modules whose output is the token sequence, in forward order, in
#: mmpretrain's token backbones; AugMask acts at one of them.
TOKEN_SITES = ('patch_embed', 'drop_after_pos')
MASK_COLORS = dict(token_drop=(0.6, 0.6, 0.6), mask_token=(0.95, 0.7, 0.1))
CAPTIONS = dict(
    token_drop='dropped tokens greyed out',
    mask_token='blocks replaced by the mask token in amber',
    input='masked input, as the backbone receives it')


def get_augmask(model: nn.Module, ratio: Optional[float] = None,
                input_patch_size: Optional[int] = None):
    """The model's AugMask, or one built for its backbone.

    ``ratio`` / ``input_patch_size`` override the config's values; a model
    without AugMask (a plain config) gets ``AugMask(ratio or 0.5)``.
    """
    from augsub_mm.models.submodels import AugMask
    own = getattr(model, 'augsub', None)
    if own is not None and not isinstance(own, AugMask) and ratio is None:
        raise ValueError(
            f'The config\'s sub-model is {type(own).__name__}, which masks '
            'nothing: vis_augsub shows AugMask. Pass --ratio R to show what '
            'AugMask at ratio R would do to this backbone.')
    if isinstance(own, AugMask) and ratio is None and \
            input_patch_size is None:
        return own
    base = own if isinstance(own, AugMask) else AugMask()
    augmask = AugMask(
        ratio=base.ratio if ratio is None else ratio,
        masking=base.masking,
        input_patch_size=input_patch_size or base.input_patch_size)
    augmask.bind(model.backbone)
    return augmask


def _tokens(out) -> torch.Tensor:
    # PatchEmbed returns (tokens, grid size); the other sites a tensor.
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def _record(backbone: nn.Module, names: Sequence[str],
            inputs: torch.Tensor) -> Dict[str, object]:
    """Outputs of ``backbone.<name>`` in one forward. Registered last, the
    hooks see the output after any hook that AugMask put there."""
    seen = {}
    handles = [getattr(backbone, name).register_forward_hook(
        lambda module, args, out, name=name: seen.setdefault(name, out))
        for name in names]
    try:
        backbone(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@torch.no_grad()
def probe(model: nn.Module, augmask, inputs: torch.Tensor) -> dict:
    """Run the backbone as the sub-model on ``inputs`` and read what AugMask
    did to it.

    Args:
        model (nn.Module): A classifier with ``backbone``, in eval mode.
        augmask (AugMask): Bound to ``model.backbone``.
        inputs (Tensor): A normalised batch (B, C, H, W).

    Returns:
        dict: ``masking`` (``'token_drop'``, ``'mask_token'`` or
        ``'input'``) and either ``view`` (the backbone's masked input, for
        input masking) or ``mask`` (B, gh, gw) bool, True where a patch
        token was dropped or replaced.
    """
    from augsub_mm.models.families import get_family
    backbone = model.backbone
    masking = augmask.resolve(get_family(backbone))
    if masking == 'input':
        seen = {}
        with augmask.engage(backbone):
            # Registered after AugMask's pre-hook: sees the masked input.
            handle = backbone.register_forward_pre_hook(
                lambda module, args: seen.setdefault('view', args[0]))
            try:
                backbone(inputs)
            finally:
                handle.remove()
        return dict(masking=masking, view=seen['view'])

    names = [n for n in TOKEN_SITES
             if isinstance(getattr(backbone, n, None), nn.Module)]
    clean = _record(backbone, names, inputs)
    with augmask.engage(backbone):
        masked = _record(backbone, names, inputs)
    grid = tuple(clean['patch_embed'][1])
    num_patches = grid[0] * grid[1]
    for name in names:
        a, b = _tokens(clean[name]), _tokens(masked[name])
        prefix = a.shape[1] - num_patches
        if a.shape != b.shape:
            mask = _dropped(a[:, prefix:], b[:, prefix:])
        elif not torch.equal(a, b):
            mask = (a[:, prefix:] != b[:, prefix:]).any(dim=-1)
        else:
            continue
        return dict(masking=masking, mask=mask.view(-1, *grid))
    raise RuntimeError(
        f'AugMask ({masking}) changed none of the token sequences at '
        f'{names} of {type(backbone).__name__}: vis_augsub cannot show where '
        'this family masks yet. Pass --input-patch-size and use '
        "augsub=dict(type='AugMask', masking='input') to see input masking.")


def _dropped(full: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(B, L) bool, True for tokens of ``full`` (B, L, C) that are not among
    ``kept`` (B, K, C): the same forward, so kept tokens are exact copies."""
    dist = torch.cdist(kept.float(), full.float(),
                       compute_mode='donot_use_mm_for_euclid_dist')
    nearest = dist.min(dim=-1)
    if nearest.values.max() > 0:
        raise RuntimeError('Kept tokens do not match the clean forward\'s '
                           'tokens; is the backbone in eval mode?')
    mask = torch.ones(full.shape[:2], dtype=torch.bool)
    mask.scatter_(1, nearest.indices, False)
    return mask


def load_batch(cfg: Config, images: Optional[List[str]],
               num_images: int) -> dict:
    """A batch from ``images`` (through the config's test pipeline) or from
    the config's test dataset (``num_images``, evenly spread)."""
    from mmpretrain.registry import DATASETS, TRANSFORMS
    from mmcv.transforms import Compose
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    if not images:
        dataset = DATASETS.build(dataset_cfg)
        picks = np.linspace(0, len(dataset) - 1, num_images).round()
        return pseudo_collate([dataset[int(i)] for i in picks])
    pipeline = list(dataset_cfg.pipeline)
    if not pipeline or 'LoadImage' not in pipeline[0]['type']:
        # In-memory datasets (MNIST, CIFAR) have no loading step and no
        # resize: load in the model's colour mode, at the backbone's size.
        mean = cfg.model.get('data_preprocessor', {}).get('mean') or [0] * 3
        load = [dict(type='LoadImageFromFile',
                     color_type='grayscale' if len(mean) == 1 else 'color')]
        size = cfg.model.backbone.get('img_size')
        if isinstance(size, int):
            load.append(dict(type='Resize', scale=(size, size)))
        pipeline = load + pipeline
    transform = Compose([TRANSFORMS.build(t) for t in pipeline])
    return pseudo_collate([transform(dict(img_path=p)) for p in images])


def to_display(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Normalised (B, C, H, W) -> (B, H, W, C) floats in [0, 1]."""
    pre = model.data_preprocessor
    if getattr(pre, '_enable_normalize', False):
        x = x * pre.std + pre.mean
    return (x.clamp(0, 255) / 255).permute(0, 2, 3, 1).cpu().numpy()


def sub_view(model: nn.Module, inputs: torch.Tensor, result: dict
             ) -> np.ndarray:
    """What the sub-model sees, as (B, H, W, 3) RGB in [0, 1]."""
    if result['masking'] == 'input':
        return _rgb(to_display(model, result['view']))
    image = _rgb(to_display(model, inputs))
    mask = F.interpolate(result['mask'][:, None].float(),
                         size=inputs.shape[-2:], mode='nearest')
    mask = mask[:, 0, :, :, None].numpy()
    color = np.array(MASK_COLORS[result['masking']])
    return image * (1 - mask) + (0.3 * image + 0.7 * color) * mask


def _rgb(images: np.ndarray) -> np.ndarray:
    return images.repeat(3, axis=-1) if images.shape[-1] == 1 else images


def draw(originals: np.ndarray, views: List[np.ndarray], title: str,
         caption: str, out: str) -> str:
    """Grid: one row per image, the input then one column per mask draw."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, cols = len(originals), 1 + len(views)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows + 0.6),
                             squeeze=False)
    for r in range(rows):
        for c, images in enumerate([originals] + views):
            ax = axes[r][c]
            ax.imshow(images[r], interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title('input' if c == 0 else f'sub-model, draw {c}',
                             fontsize=9)
    fig.suptitle(f'{title}\n{caption}', fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw input images next to what the AugMask sub-model '
        'sees for the config\'s backbone.')
    parser.add_argument(
        'config', help='config file, or a model-zoo config such as '
        'mmpretrain::resnet/resnet50_8xb32_in1k.py')
    parser.add_argument('--images', nargs='+',
                        help='image files (default: images of the config\'s '
                        'test dataset)')
    parser.add_argument('--num-images', type=int, default=4,
                        help='images from the test dataset (default 4)')
    parser.add_argument('--draws', type=int, default=2,
                        help='independent masks per image (default 2)')
    parser.add_argument('--ratio', type=float,
                        help='mask ratio (default: the config\'s AugMask, '
                        'else 0.5)')
    parser.add_argument('--input-patch-size', type=int,
                        help='AugMask input_patch_size (default: the '
                        'config\'s, else 32)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='output PNG (default: '
                        '<config name>_augsub.png)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from augsub_mm.config import resolve_config
    cfg = Config.fromfile(resolve_config(args.config))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    import augsub_mm  # noqa: F401
    from mmpretrain.registry import MODELS

    torch.manual_seed(args.seed)
    model = MODELS.build(cfg.model).eval()
    augmask = get_augmask(model, args.ratio, args.input_patch_size)
    data = model.data_preprocessor(
        load_batch(cfg, args.images, args.num_images), False)
    inputs = data['inputs']
    results = [probe(model, augmask, inputs) for _ in range(args.draws)]
    masking = results[0]['masking']
    name = osp.splitext(osp.basename(args.config))[0]
    out = args.out or f'{name}_augsub.png'
    draw(_rgb(to_display(model, inputs)),
         [sub_view(model, inputs, r) for r in results], name,
         f'{type(model.backbone).__name__}, AugMask {augmask.ratio} '
         f'({masking}): {CAPTIONS[masking]}', out)
    print(f'Saved {out}')


if __name__ == '__main__':
    main()
