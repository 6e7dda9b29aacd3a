# Each line imports one module so that its classes register into mmseg's registries.
from .transforms import *  # noqa: F401,F403
# -- datasets (one line per module) --
from .refer import ReferAnnotations, RestrictedUnpickler, load_refs, save_refs_json  # noqa: F401
from .refcoco import RefCOCODataset  # noqa: F401
from .synthetic import generate_synthetic_refcoco  # noqa: F401
