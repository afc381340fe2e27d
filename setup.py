import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))
# What MIM and mmengine look for in an installed OpenMMLab package:
# <package>/.mim/{configs,tools,model-index.yml,metafile.yml}.
MIM_FILES = ('configs', 'tools', 'model-index.yml', 'metafile.yml')
# Run at interpreter start by a .pth file; lets mmengine resolve
# `augsub_mm::` config paths (see augsub_mm_hook.py).
HOOK_PTH = 'augsub_mm_hook.pth'


def readme():
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


def requirements(path):
    with open(osp.join(HERE, path)) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


def version():
    scope = {}
    with open(osp.join(HERE, 'augsub_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def add_mim_extension():
    """Put configs/, tools/ and the model index into ``augsub_mm/.mim``, as
    MMPretrain's setup.py does: links in develop (editable) mode, so that
    edits show at once; copies when building a wheel or an sdist, so that
    they ship inside the package."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'install'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(HERE, 'augsub_mm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_path, name)
        if not osp.exists(src):  # an sdist being built into a wheel
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


class BuildPyWithPth(build_py):
    """build_py that also puts the hook's .pth file at the top of the
    wheel (site-packages), where the interpreter reads it at start."""

    def run(self):
        super().run()
        self.copy_file(osp.join(HERE, HOOK_PTH),
                       osp.join(self.build_lib, HOOK_PTH))

    def get_outputs(self, *args, **kwargs):
        return super().get_outputs(*args, **kwargs) + [
            osp.join(self.build_lib, HOOK_PTH)]


add_mim_extension()
setup(
    name='augsub_mm',
    version=version(),
    description='AugSub / MaskSub sub-model regularization for '
    'MMPretrain',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'configs.*', 'tools',
                                    'tools.*', 'tests', 'tests.*')),
    py_modules=['augsub_mm_hook'],
    include_package_data=True,
    cmdclass=dict(build_py=BuildPyWithPth),
    # Measured on 3.10-3.13 with both stacks (README, Python versions).
    python_requires='>=3.10',
    install_requires=requirements('requirements/runtime.txt'),
    extras_require=dict(
        # One of the two OpenMMLab stacks (same import names; pip
        # cannot install both): the pinned upstream releases, or the
        # maintained onedl fork. Without an extra, bring your own.
        openmmlab=requirements('requirements/openmmlab.txt'),
        onedl=requirements('requirements/onedl.txt'),
        # AugSubDeepSpeedStrategy's engine (FlexibleRunner + DeepSpeed).
        deepspeed=requirements('requirements/deepspeed.txt'),
        # timm models (TimmClassifier, TIMMBackbone) under AugSub.
        timm=requirements('requirements/timm.txt'),
        # transformers models (HuggingFaceClassifier) under AugSub.
        hf=requirements('requirements/hf.txt'),
        tests=requirements('requirements/tests.txt')),
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False)
