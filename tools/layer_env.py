"""Make the torch and torchvision of one virtual environment importable in
another, without installing them again (torch's CUDA wheel is ~5.5 GB).

Run it with the python of the environment that has torch; it links torch,
torchvision and everything they require (their dependency closure, as
installed there, never setuptools or pip) into ``<target venv>/augsub-layer``,
puts that folder on the target's ``sys.path`` with a ``.pth`` file, after
the target's own site-packages, and writes the target's console scripts of
those packages (``torchrun``, ...). pip in the target then sees them as
installed; anything the target installs itself (another numpy, say) comes
first on ``sys.path``. Nothing else of the source environment (its
OpenMMLab stack in particular) is visible in the target.

tools/setup_env.sh runs it for ``AUGSUB_TORCH_FROM=DIR``::

    .venv/bin/python tools/layer_env.py .venv-onedl/bin/python
"""
import argparse
import importlib.metadata as metadata
import json
import os
import os.path as osp
import re
import subprocess
import sys
from typing import Dict, List

from packaging.requirements import Requirement

#: What the layer starts from.
ROOTS = ('torch', 'torchvision')
#: Never linked: the target's installer and build tools stay its own (the
#: onedl fork needs a setuptools without pkg_resources, for one).
NEVER = ('pip', 'setuptools', 'wheel')
#: The ``.pth`` file that puts the layer on the target's ``sys.path``
#: (tests/test_packaging/test_wheel.py reads it too).
PTH_NAME = 'augsub-layer.pth'


def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def closure(roots=ROOTS) -> Dict[str, metadata.Distribution]:
    """The installed distributions ``roots`` require, recursively, with
    their environment markers evaluated here (no extras)."""
    found: Dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in found or name in NEVER:
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f'{name} is not installed in {sys.prefix}, which should '
                f'provide {", ".join(ROOTS)} and their requirements: install '
                'them there first, or pick another environment.')
        for text in found[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return found


def top_level(dist: metadata.Distribution) -> List[str]:
    """The entries of site-packages that ``dist`` installed (packages,
    modules, its .dist-info), not its scripts or data outside it."""
    entries = set()
    for path in dist.files or []:
        parts = path.parts
        if parts and parts[0] not in ('..', '__pycache__') \
                and not parts[0].endswith('.pth'):
            entries.add(parts[0])
    return sorted(entries)


def target_info(python: str) -> dict:
    code = ('import json, sys, sysconfig; print(json.dumps(dict(version='
            'list(sys.version_info[:2]), prefix=sys.prefix, '
            'purelib=sysconfig.get_paths()["purelib"])))')
    out = subprocess.run([python, '-c', code], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def script(python: str, module: str, attr: str) -> str:
    return (f'#!{python}\nimport sys\nfrom {module} import {attr.split(".")[0]}'
            f'\nif __name__ == "__main__":\n    sys.exit({attr}())\n')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('target', help="the target environment's python")
    args = parser.parse_args(argv)
    target = target_info(args.target)
    if tuple(target['version']) != sys.version_info[:2]:
        raise SystemExit(
            f'{args.target} is Python {".".join(map(str, target["version"]))}'
            f', {sys.executable} is Python {sys.version_info[0]}.'
            f'{sys.version_info[1]}: compiled packages (torch) only load in '
            'the version they were built for. Create the target with the '
            'same interpreter.')
    layer = osp.join(target['prefix'], 'augsub-layer')
    os.makedirs(layer, exist_ok=True)
    for name in os.listdir(layer):  # a previous layer: start over
        os.unlink(osp.join(layer, name))
    dists = closure()
    for dist in dists.values():
        base = str(dist.locate_file(''))
        for entry in top_level(dist):
            link = osp.join(layer, entry)
            if not osp.lexists(link):  # namespace folders (nvidia/) once
                os.symlink(osp.join(base, entry), link)
        for ep in dist.entry_points:
            if ep.group == 'console_scripts':
                path = osp.join(target['prefix'], 'bin', ep.name)
                with open(path, 'w') as f:
                    f.write(script(osp.join(target['prefix'], 'bin',
                                            'python'), ep.module, ep.attr))
                os.chmod(path, 0o755)
    with open(osp.join(target['purelib'], PTH_NAME), 'w') as f:
        f.write(layer + '\n')
    print(f'{target["prefix"]}: {len(dists)} distributions linked from '
          f'{sys.prefix} ({", ".join(ROOTS)} and their requirements)')


if __name__ == '__main__':
    main()
