"""Fashion-MNIST, the real data of the demo and the small-scale study.

Debian's ``dataset-fashion-mnist`` package ships the four gzipped idx files
(60k train / 10k test, 28x28 grey, 10 classes, MIT licence);
mmpretrain's ``FashionMNIST`` dataset reads them un-gzipped from its
``data_root``. :func:`prepare_fashion_mnist` puts them there; it never
installs anything (``tools/setup_env.sh`` installs the Debian package).
"""
import gzip
import os
import os.path as osp
import shutil

DEBIAN_PACKAGE = 'dataset-fashion-mnist'
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
         't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


def prepare_fashion_mnist(data_root: str, source: str = DEBIAN_DIR) -> str:
    """Make ``data_root`` hold the four un-gzipped Fashion-MNIST idx files.

    Files already there are kept. Missing ones are un-gzipped from
    ``source`` (Debian's package folder by default).

    Args:
        data_root (str): Folder for mmpretrain's ``FashionMNIST`` dataset.
        source (str): Folder with the ``*.gz`` (or plain) idx files.

    Returns:
        str: ``data_root``.
    """
    missing = [f for f in FILES if not osp.isfile(osp.join(data_root, f))]
    if not missing:
        return data_root

    def find(name):
        for candidate in (osp.join(source, name + '.gz'),
                          osp.join(source, name)):
            if osp.isfile(candidate):
                return candidate
        return None

    os.makedirs(data_root, exist_ok=True)
    for name in missing:
        src = find(name)
        if src is None:
            raise FileNotFoundError(
                f'Fashion-MNIST file {name} is neither in {data_root} nor in '
                f'{source}. Install it with `apt-get install {DEBIAN_PACKAGE}`'
                f' (as root), or put the four idx files ({", ".join(FILES)}, '
                'gzipped or not) in a folder and point to it: FMNIST_ROOT=DIR '
                'for tools/run_demo.sh and tools/run_tests.sh, --data-root DIR '
                'for tools/study/run_study.py.')
        tmp = osp.join(data_root, name + '.part')
        opener = gzip.open if src.endswith('.gz') else open
        with opener(src, 'rb') as fin, open(tmp, 'wb') as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, osp.join(data_root, name))
    return data_root
