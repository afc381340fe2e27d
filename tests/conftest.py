"""Shared fixtures: a small generated image-folder dataset and the path of
the tiny configs, so every Runner-level test trains on real files through
mmpretrain's own dataset and pipeline code."""
import copy
import os
import os.path as osp
import sys

import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIGS = osp.join(REPO, 'tests', 'configs')

if REPO not in sys.path:
    sys.path.insert(0, REPO)


#: Side folders of the test environment (tools/setup_env.sh): transformers
#: and DeepSpeed, kept out of site-packages so that the processes the tests
#: start (the tools as users run them: hundreds a suite run) do not import
#: them (mmengine does at every start wherever they are importable: 0.5 and
#: 0.4 CPU-s a process).
SIDE_SITES = tuple(osp.join(sys.prefix, name)
                   for name in ('hf-site', 'ds-site'))


def side_sites_on_path() -> None:
    """Make transformers and DeepSpeed importable in the test processes
    (the HuggingFaceClassifier tests, the DeepSpeed strategy's), before any
    OpenMMLab import: mmpretrain decides at import whether
    HuggingFaceClassifier has transformers. Appended, so the environment's
    own packages come first; packages installed the usual way are found as
    well."""
    for site in SIDE_SITES:
        if osp.isdir(site) and site not in sys.path:
            sys.path.append(site)


side_sites_on_path()


def make_image_folder(root: str, num_classes: int = 4, per_class: int = 8,
                      size: int = 32, seed: int = 0) -> str:
    """Write ``num_classes`` folders of PNGs whose class is learnable (a
    coloured square at a class-specific place on noise). Returns ``root``."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = osp.join(root, f'class_{c}')
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            q = size // 2
            y, x = (c // 2) * q, (c % 2) * q
            img[y:y + q, x:x + q, c % 3] = 230
            Image.fromarray(img).save(osp.join(folder, f'{i}.png'))
    return root


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
    """A 4-class, 32x32 px image folder shared by the whole session."""
    return make_image_folder(str(tmp_path_factory.mktemp('toy_images')))


@pytest.fixture(scope='session')
def tiny_configs():
    return TINY_CONFIGS


def _memoize_mmengine_metafile_scan() -> None:
    """Read mmpretrain's metafiles once per test process, not once per
    ``mmpretrain::`` base.

    mmengine resolves every ``mmpretrain::`` path, ``_base_`` files too, by
    loading all the package's metafiles (85 YAML files in mmpretrain 1.2,
    ~0.25 s) and only then falls back to the base folder: 45 % of
    test_configs.py's time (cProfile, 2026-12-03). The files do not change
    during a session, so each answer (a metafile entry, or the ValueError
    that sends mmengine to the base folder) is kept per (package, config).
    Same results, same errors; subprocesses (the tools as users run them)
    keep mmengine's own lookup."""
    import functools

    from mmengine.config import utils

    scan = getattr(utils, '_get_cfg_metainfo', None)
    if scan is None or getattr(scan, 'memoized_by_tests', False):
        return  # another mmengine's lookup, or done already

    @functools.lru_cache(maxsize=None)
    def lookup(package_path: str, cfg_path: str):
        try:
            return scan(package_path, cfg_path), None
        except ValueError as error:
            return None, str(error)

    @functools.wraps(scan)
    def memoized(package_path: str, cfg_path: str) -> dict:
        found, error = lookup(package_path, cfg_path)
        if error is not None:
            raise ValueError(error)
        return copy.deepcopy(found)  # callers may change what they get

    memoized.memoized_by_tests = True
    utils._get_cfg_metainfo = memoized


_memoize_mmengine_metafile_scan()


def data_root_options(root: str) -> dict:
    """cfg-options that point the tiny configs at ``root``."""
    return {f'{split}_dataloader.dataset.data_root': root
            for split in ('train', 'val', 'test')}


# -- under pytest-xdist (tools/run_tests.sh runs the suite on every core) --
#: Test modules that take longest, longest first: started first, so that
#: no long module is left for last while the other worker sits idle. A
#: scheduling hint only. Seconds of the module's tests in CI's 2-worker run
#: (junit times, machine shared with other jobs, 2026-12-03; the flexible
#: runner's after its 150 s DeepSpeed op build went); test_mim_editable.py
#: is short there (xfail) but the onedl run's second longest (97 s).
LONG_FIRST = (
    'tests/test_study_smoke.py',  # 586
    'tests/test_engine/test_flexible_runner.py',  # 530
    'tests/test_packaging/test_wheel.py',  # 178
    'tests/test_packaging/test_mim_editable.py',  # 7 (onedl: 97)
    'tests/test_engine/test_compile.py',  # 166
    'tests/test_packaging/test_any_launcher.py',  # 160
    'tests/test_tools/test_train_tool.py',  # 116
    'tests/test_tools/test_benchmark.py',  # 98
    'tests/test_tools/test_zoo_coverage.py',  # 92
    'tests/test_tools/test_dist_train.py',  # 91
    'tests/test_tools/test_test_tool.py',  # 84
    'tests/test_configs.py',  # 74
    'tests/test_engine/test_step_features.py',  # 72
    'tests/test_dist_swin.py',  # 44
    'tests/test_checkpoint.py',  # 27
)


def pytest_collection_modifyitems(config, items):
    # tools/run_tests.sh distributes whole modules (--dist loadfile: a
    # module's training run or fresh environment, module-scoped fixtures,
    # is built once) in the order of the workers' collection
    # (--no-loadscope-reorder).
    if not hasattr(config, 'workerinput'):  # not an xdist worker
        return

    def rank(item):
        path = item.nodeid.split('::')[0]
        return LONG_FIRST.index(path) if path in LONG_FIRST \
            else len(LONG_FIRST)

    # Stable: the order within a module, and of the other modules, stays.
    items.sort(key=rank)
