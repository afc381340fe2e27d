"""Pure masking functions used by AugMask (no module state, easy to test)."""
import math

import torch


def num_kept(length: int, ratio: float) -> int:
    """Tokens (or patches) kept out of ``length`` at mask ``ratio``."""
    return int(length * (1 - ratio))


# Random draws are eager under torch.compile (here and in block_mask): they
# come from the sub pass's seeded stream, as in eager mode, where a compiled
# graph would draw numbers of its own.
@torch.compiler.disable
def random_keep_indices(batch: int, length: int, keep: int,
                        device: torch.device) -> torch.Tensor:
    """``(batch, keep)`` indices in ``[0, length)``, drawn independently per
    sample, without repetition, in ascending order."""
    noise = torch.rand(batch, length, device=device)
    # Sorting the kept indices keeps the spatial order of the tokens; it is
    # irrelevant to the maths but makes masks easy to look at.
    return noise.topk(keep, dim=1, largest=False).indices.sort(dim=1).values


def drop_tokens(x: torch.Tensor, ratio: float, num_prefix_tokens: int = 0,
                keep_indices: torch.Tensor = None) -> torch.Tensor:
    """Randomly drop ``ratio`` of the patch tokens of every sample.

    Args:
        x (Tensor): Tokens of shape (B, N, C); the first
            ``num_prefix_tokens`` (class token, ...) are always kept.
        ratio (float): Fraction of patch tokens to drop, in [0, 1).
        num_prefix_tokens (int): Tokens in front of the patch tokens.
        keep_indices (Tensor, optional): (B, K) patch-token indices to keep;
            drawn at random when None.

    Returns:
        Tensor: (B, num_prefix_tokens + int(L * (1 - ratio)), C), where
        ``L = N - num_prefix_tokens``.

    Examples:
        >>> x = torch.rand(2, 1 + 196, 384)
        >>> drop_tokens(x, 0.5, num_prefix_tokens=1).shape
        torch.Size([2, 99, 384])
    """
    B, N, C = x.shape
    length = N - num_prefix_tokens
    if keep_indices is None:
        keep = num_kept(length, ratio)
        if keep < 1:
            raise ValueError(
                f'AugMask ratio {ratio} keeps no token out of {length}; '
                'lower the ratio or use larger inputs.')
        keep_indices = random_keep_indices(B, length, keep, x.device)
    patches = x[:, num_prefix_tokens:].gather(
        1, keep_indices.unsqueeze(-1).expand(-1, -1, C))
    return torch.cat([x[:, :num_prefix_tokens], patches], dim=1)


@torch.compiler.disable
def block_mask(batch: int, grid_h: int, grid_w: int, ratio: float,
               device: torch.device) -> torch.Tensor:
    """(B, grid_h, grid_w) bool mask, True where masked; exactly
    ``grid_h * grid_w - int(grid_h * grid_w * (1 - ratio))`` blocks masked
    in every sample, chosen independently per sample. Raises a ValueError
    when that would mask every block."""
    n = grid_h * grid_w
    if num_kept(n, ratio) < 1:
        # Masking every block would train the sub-model on blank inputs.
        raise ValueError(
            f'AugMask ratio {ratio} keeps no block out of {n} '
            f'({grid_h} x {grid_w}): every block would be masked. Lower the '
            'ratio, or use a smaller input_patch_size (it sets the block size '
            'in pixels) or larger inputs.')
    num_masked = n - num_kept(n, ratio)
    ranks = torch.rand(batch, n, device=device).argsort(dim=1).argsort(dim=1)
    return (ranks < num_masked).view(batch, grid_h, grid_w)


def expand_block_mask(mask: torch.Tensor, block: int, height: int,
                      width: int) -> torch.Tensor:
    """Blow a (B, gh, gw) block mask up to (B, height, width) pixels/tokens.
    Border blocks that stick out of the image are cropped: a partial border
    block counts as one block."""
    full = mask.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)
    return full[:, :height, :width]


#: Patches per side of the paper's CNN sub-model: 32 px patches on 224 px.
AUTO_GRID = 7
#: Block side of mask-token masking under input_patch_size='auto', in
#: input pixels: the paper's Swin blocks (8 x 8 tokens at Swin's patch size
#: 4), taken as the nearest whole number of tokens of other strides
#: (:func:`auto_block_tokens`).
MASK_TOKEN_BLOCK = 32


def auto_block_tokens(stride: int) -> int:
    """Side, in tokens, of a mask-token block under ``'auto'`` for a token
    stride of ``stride`` input pixels: the whole number of tokens nearest
    to :data:`MASK_TOKEN_BLOCK` pixels, at least one (4 px: 8 tokens; 16:
    2; 14: 2, i.e. 28 px; 7: 5, i.e. 35 px)."""
    return max(1, round(MASK_TOKEN_BLOCK / stride))


def auto_patch_size(height: int, width: int) -> int:
    """The patch side AugMask's ``input_patch_size='auto'`` gives a
    ``height`` x ``width`` input: ``ceil(min(height, width) / 7)`` px, the
    smallest square patch that cuts the shorter side into at most 7 (the
    paper's 32 px on 224 px, exactly). The longer side gets as many patches
    as it holds (224 x 448: 32 px, a 7 x 14 grid); a side that is not a
    multiple ends in a partial patch, which counts like a full one (every
    patch is masked with the same probability, so on average the pixels
    are masked in the fraction the patches are).

    Examples:
        >>> [auto_patch_size(s, s) for s in (224, 384, 160, 32, 28)]
        [32, 55, 23, 5, 4]
    """
    return max(1, math.ceil(min(height, width) / AUTO_GRID))


def mask_input_patches(x: torch.Tensor, ratio: float,
                       patch_size: int = 32) -> torch.Tensor:
    """Zero ``ratio`` of the ``patch_size`` x ``patch_size`` patches of a
    normalised image batch (B, C, H, W); zero is the dataset mean colour.

    Sizes that are not multiples of ``patch_size`` get partial patches at the
    right and bottom border, which count like full ones.
    """
    B, _, H, W = x.shape
    mask = block_mask(B, math.ceil(H / patch_size), math.ceil(W / patch_size),
                      ratio, x.device)
    pixels = expand_block_mask(mask, patch_size, H, W)
    return x * (~pixels).unsqueeze(1).to(x.dtype)
