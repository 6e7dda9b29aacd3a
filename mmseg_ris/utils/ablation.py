"""Component ablation of MagNet (in the spirit of the paper's Table 3): variants, configs, summaries.

The variants switch MagNet's three additions off one at a time against a common baseline, on any MagNet
config (the CPU-scale study uses ``configs/magnet/magnet_tiny_synthetic.py``):

========== ============================ ========== ===============
variant    fusion after every stage     CAL (0.5)  Mask Grounding
========== ============================ ========== ===============
baseline   PWAM + gate (LAVT, image     off        off
           side only)
+MG        PWAM + gate                  off        on
+CAM       CAM (both streams)           off        off
+CAL       PWAM + gate                  on         off
full       CAM                          on         on   (MagNet)
========== ============================ ========== ===============

Every variant keeps MagNet's mask decoder and its BCE + Dice losses, so a row differs from the baseline
in exactly the component it names. (The paper's baseline is LAVT with its own decoder; here the decoder
is held fixed so that the comparison isolates the three components.)

:func:`write_variant_config` writes a variant as a config file that inherits the base config through
``_base_``, so every run of an ablation is an ordinary config that ``tools/train.py`` and
``tools/test.py`` read; :func:`summarize` turns per-run metrics into mean ± sample std per variant.
"""
import math
import os
import os.path as osp
from typing import Dict, List, Mapping, Sequence

ABLATION_VARIANTS: Dict[str, Dict[str, bool]] = {
    'baseline': dict(cam=False, cal=False, mg=False),
    '+MG': dict(cam=False, cal=False, mg=True),
    '+CAM': dict(cam=True, cal=False, mg=False),
    '+CAL': dict(cam=False, cal=True, mg=False),
    'full': dict(cam=True, cal=True, mg=True),
}

# LAVT's fusion, substituted for CAM when the variant has no CAM (the backbone fills in the widths).
PWAM_FUSION = "dict(_delete_=True, type='PWAM', num_heads=1)"


def variant_slug(name: str) -> str:
    """File-system name of a variant (``'+MG'`` -> ``'plus_mg'``)."""
    if name not in ABLATION_VARIANTS:
        raise ValueError(f'unknown ablation variant {name!r}; known: {list(ABLATION_VARIANTS)}')
    return name.replace('+', 'plus_').lower()


def variant_config_text(base_config: str, name: str) -> str:
    """The text of a config file that turns ``base_config`` (a MagNet config) into variant ``name``.

    Args:
        base_config (str): Path of the MagNet config the variant inherits (made absolute).
        name (str): A key of :data:`ABLATION_VARIANTS`.

    Returns:
        str: Python config source.
    """
    variant_slug(name)  # validates the name
    parts = ABLATION_VARIANTS[name]
    model = []
    if not parts['cam']:
        model.append(f'backbone=dict(fusions={PWAM_FUSION})')
    if not parts['cal']:
        model.append('decode_head=dict(loss_cal=None)')
    if not parts['mg']:
        model.append('auxiliary_head=None')
    lines = [f'# MagNet ablation variant {name!r}: CAM {"on" if parts["cam"] else "off (PWAM + gate)"}, '
             f'CAL {"on" if parts["cal"] else "off"}, Mask Grounding {"on" if parts["mg"] else "off"}.',
             f'_base_ = [{osp.abspath(base_config)!r}]']
    if model:
        lines.append('model = dict(' + ', '.join(model) + ')')
    # A switched-off part leaves parameters without gradients (PWAM's last gate, CAL's projection);
    # DDP must be told.
    lines.append('find_unused_parameters = True')
    return '\n'.join(lines) + '\n'


def write_variant_config(base_config: str, name: str, out_dir: str) -> str:
    """Write :func:`variant_config_text` to ``out_dir/<slug>.py`` and return its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, f'{variant_slug(name)}.py')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(variant_config_text(base_config, name))
    return path


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError('mean_std: no values')
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return dict(mean=mean, std=std, n=n)


def summarize(runs: Sequence[Mapping], metrics: Sequence[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean ± std of each metric per variant, over the seeds.

    Args:
        runs: One mapping per finished run with ``variant`` and the metric values under their names.
        metrics: Metric names to summarise.

    Returns:
        dict: ``{variant: {metric: {mean, std, n}}}`` in :data:`ABLATION_VARIANTS` order.
    """
    out = {}
    for name in ABLATION_VARIANTS:
        mine = [r for r in runs if r['variant'] == name]
        if mine:
            out[name] = {m: mean_std([float(r[m]) for r in mine]) for m in metrics}
    return out


def markdown_table(summary: Mapping, metrics: Sequence[str]) -> str:
    """A Markdown table of :func:`summarize`'s output, with the difference to the baseline."""
    head = '| variant | CAM | CAL | MG | seeds | ' + ' | '.join(metrics) + ' |'
    rows: List[str] = [head, '|' + '---|' * (5 + len(metrics))]
    base = summary.get('baseline')
    for name, stats in summary.items():
        parts = ABLATION_VARIANTS[name]
        cells = []
        for m in metrics:
            s = stats[m]
            cell = f'{s["mean"]:.2f} ± {s["std"]:.2f}'
            if base is not None and name != 'baseline':
                cell += f' ({s["mean"] - base[m]["mean"]:+.2f})'
            cells.append(cell)
        flags = ['✓' if parts[k] else '' for k in ('cam', 'cal', 'mg')]
        n = stats[metrics[0]]['n']
        rows.append(f'| {name} | ' + ' | '.join(flags) + f' | {n} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows) + '\n'
