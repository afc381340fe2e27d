import os.path as osp

from setuptools import find_packages, setup


def readme():
    with open(osp.join(osp.dirname(__file__), 'README.md'),
              encoding='utf-8') as f:
        return f.read()


def requirements(path):
    with open(osp.join(osp.dirname(__file__), path)) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


def version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'augsub_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='augsub_mm',
    version=version(),
    description='AugSub / MaskSub sub-model regularization for MMPretrain',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.8',
    install_requires=requirements('requirements/runtime.txt'),
    extras_require=dict(tests=['pytest', 'matplotlib']),
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False)
