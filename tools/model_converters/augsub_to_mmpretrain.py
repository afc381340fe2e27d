"""Turn an AugSub checkpoint into a plain MMPretrain one.

A model trained with AugSub (`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_) is an ordinary classifier at
inference, but its checkpoint may hold parameters of the sub-model: AugMask
on Swin saves its mask token as ``augsub.mask_token``. Loaded as is into the
model-zoo config, that key is reported as unexpected (``strict=True``
refuses it). This tool removes the sub-model's keys from the weights (and
from the EMA weights, if any) and drops the training state (optimizer,
message hub), so that the result loads with ``strict=True`` into the plain
config::

    python tools/model_converters/augsub_to_mmpretrain.py \\
        work_dirs/swin-tiny_16xb64-augmask_in1k/epoch_300.pth \\
        swin-tiny_augmask_in1k.pth
    python tools/test.py configs/swin/swin-tiny_16xb64_in1k.py \\
        swin-tiny_augmask_in1k.pth
"""
import argparse
from typing import Dict, List, Tuple

import augsub_mm  # noqa: F401  allow-lists mmengine checkpoint globals
import torch

# State-dict prefix of the part of AugSubClassifier that ImageClassifier
# lacks (the sub-model); EMA weights are saved under `module.`.
AUGSUB_PREFIXES = ('augsub.', 'module.augsub.')
WEIGHT_KEYS = ('state_dict', 'ema_state_dict')


def strip_augsub(state_dict: Dict[str, torch.Tensor]
                 ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The state dict without AugSub-only keys, and the keys removed."""
    removed = [k for k in state_dict if k.startswith(AUGSUB_PREFIXES)]
    kept = {k: v for k, v in state_dict.items() if k not in removed}
    return kept, removed


def convert(checkpoint: dict) -> Tuple[dict, List[str]]:
    """A weights-only checkpoint (``meta``, ``state_dict`` and, if present,
    ``ema_state_dict``) without AugSub-only keys, and the keys removed."""
    if 'state_dict' not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    out = dict(meta=checkpoint.get('meta', {}))
    removed = []
    for name in WEIGHT_KEYS:
        if name in checkpoint:
            out[name], gone = strip_augsub(checkpoint[name])
            removed += [f'{name}: {k}' for k in gone]
    return out, removed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description='Remove AugSub-only keys from a checkpoint so that it '
        'loads into the plain MMPretrain config.')
    parser.add_argument('src', help='AugSub checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the plain checkpoint')
    args = parser.parse_args(argv)
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    out, removed = convert(checkpoint)
    torch.save(out, args.dst)
    print(f'Removed {len(removed)} AugSub key(s): {", ".join(removed)}'
          if removed else 'No AugSub key found; weights copied unchanged.')
    print(f'Saved {args.dst}')


if __name__ == '__main__':
    main()
