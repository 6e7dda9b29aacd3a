from .checkpoint import checkpoint_safe_globals, register_checkpoint_safe_globals
from .path import resolve_path
from .progress import progress_bar
from .dist import close_distributed, init_cpu_distributed
from .amp import enable_amp

__all__ = ['resolve_path', 'checkpoint_safe_globals', 'register_checkpoint_safe_globals',
           'progress_bar', 'init_cpu_distributed', 'close_distributed', 'enable_amp']
