# -- metrics (one line per module) --
from .ris_metric import RISMetric  # noqa: F401
