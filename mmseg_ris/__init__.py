"""mmseg_ris: referring image segmentation on MMSegmentation 1.x.

Importing the package registers every dataset, transform, model and metric into MMSegmentation's
registries, so configs only need
``custom_imports = dict(imports=['mmseg_ris'], allow_failed_imports=False)`` and
``default_scope = 'mmseg'``. It also allow-lists the classes that mmengine checkpoints need under
``torch.load(weights_only=True)`` (see :mod:`mmseg_ris.utils.checkpoint`).
"""
from .utils import register_checkpoint_safe_globals
from .version import __version__

register_checkpoint_safe_globals()

from . import datasets, engine, evaluation, models, visualization  # noqa: E402,F401  (registration)
from . import apis  # noqa: E402,F401  (RISInferencer; last: it uses the registered modules)

__all__ = ['__version__']
