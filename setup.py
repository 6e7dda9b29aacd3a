"""Installation of mmseg_ris (see README.md: mmcv 2.1.0 must be built with its ops first)."""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(fname: str) -> list:
    """Requirement lines of a requirements file, without comments."""
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


def get_version() -> str:
    with open(osp.join(HERE, 'mmseg_ris', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


setup(
    name='mmseg_ris',
    version=get_version(),
    description='Referring image segmentation (MagNet, LAVT, ...) on MMSegmentation 1.x',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'demo', 'tests', 'docs')),
    python_requires='>=3.9',
    license='Apache License 2.0',
    install_requires=read_requirements('requirements/runtime.txt') + ['mmcv>=2.0.0rc4,<2.2.0'],
    extras_require=dict(
        tests=read_requirements('requirements/tests.txt'),
        optional=read_requirements('requirements/optional.txt'),
    ),
    zip_safe=False)
