"""The sub pass's own random stream.

Every random draw of the sub pass (masks, drop-path, dropout) is made from
a stream seeded by :func:`sub_pass_seed`, a function of the run's seed, the
process rank and the iteration, inside a fork of the global generators that
is undone afterwards. Hence:

- ranks draw different masks by construction, whatever the config's
  ``randomness`` (mmengine gives every rank the same seed by default);
- a run resumed from a checkpoint draws the masks an uninterrupted run
  would have drawn at the same iteration;
- the main pass's randomness (Mixup/CutMix, its own drop-path) is exactly
  that of a run without the sub-model;
- gradient checkpointing, which replays the generator state of the
  forward during the backward, sees the same stream.
"""
import hashlib
from contextlib import contextmanager
from typing import Iterator

import torch
from mmengine.dist import get_rank


# Plain Python (hashing): never compiled, also when called from a compiled
# training step (it would recompile for every iteration number).
@torch.compiler.disable
def sub_pass_seed(iteration: int, rank: int = None,
                  base_seed: int = None) -> int:
    """The seed of the sub pass at ``iteration``.

    Args:
        iteration (int): The optimizer wrapper's iteration count when the
            step starts (the Runner's iteration; restored on resume).
        rank (int, optional): Process rank. Defaults to the current one.
        base_seed (int, optional): The run's seed. Defaults to
            ``torch.initial_seed()``, which mmengine sets from
            ``randomness.seed`` (and restores on resume); the training step
            passes the value it took at its first iteration
            (:meth:`AugSubClassifier.run_seed`), which no backbone that
            reseeds the generator (RevViT) can change.

    Returns:
        int: A 63-bit seed, different for every (seed, rank, iteration).
    """
    if rank is None:
        rank = get_rank()
    if base_seed is None:
        base_seed = torch.initial_seed()
    key = f'augsub:{base_seed}:{rank}:{iteration}'.encode()
    return int.from_bytes(
        hashlib.blake2b(key, digest_size=8).digest(), 'little') >> 1


@contextmanager
def seeded_stream(seed: int, device: torch.device) -> Iterator[None]:
    """Run the body on the CPU generator and ``device``'s generator seeded
    with ``seed``; both are restored on exit, also when the body raises.
    Other devices' generators are not touched."""
    device = torch.device(device)
    if device.type == 'cpu':
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
        return
    backend = getattr(torch, device.type)
    index = device.index if device.index is not None \
        else backend.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.random.default_generator.manual_seed(seed)
        with backend.device(index):
            backend.manual_seed(seed)
        yield
