"""Every config parses with the OpenMMLab conventions, and every model in it builds."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_ris  # noqa: F401
from mmseg.registry import MODELS
from mmseg_ris.utils.benchmark import prepare_benchmark_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
                 if '_base_' not in p)


def test_configs_found():
    names = {osp.basename(p) for p in CONFIGS}
    assert 'lavt_tiny_synthetic.py' in names and 'magnet_tiny_synthetic.py' in names
    assert len(CONFIGS) >= 12


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_config_conventions(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmseg'
    assert 'mmseg_ris' in cfg.custom_imports['imports']
    assert cfg.model.type == 'RISEncoderDecoder'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
                'test_evaluator', 'optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert key in cfg, f'{osp.basename(path)} lacks {key}'
    assert cfg.val_evaluator['type'] == 'RISMetric'
    # the pipeline tokenises with the same directory the Mask Grounding head reads
    aux = cfg.model.get('auxiliary_head')
    if aux:
        toks = [t['tokenizer'] for t in cfg.train_dataloader.dataset.get('pipeline', [])
                if t['type'] == 'TokenizeText']
        assert toks in ([], [aux['tokenizer']])


# one config per distinct model (full size built with random weights, as the benchmark does)
MODEL_CONFIGS = ['lavt/lavt_tiny_synthetic.py', 'magnet/magnet_tiny_synthetic.py',
                 'lavt/lavt-mg_swin-b_bert-base_4xb8-40e_refcoco-480x480.py',
                 'magnet/magnet_swin-b_bert-base_4xb8-40e_refcoco-480x480.py']


@pytest.mark.parametrize('name', MODEL_CONFIGS)
def test_models_build(name):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    if 'tiny' not in name:
        prepare_benchmark_config(cfg)
    model = MODELS.build(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    assert n > 0
    if 'tiny' in name:
        # a forward pass in tensor mode at the config's input size
        model.eval()
        size = cfg.model.data_preprocessor['size']
        from mmseg.structures import SegDataSample
        s = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
        ids = torch.zeros(20, dtype=torch.long)
        ids[:4] = torch.tensor([101, 2417, 4418, 102])
        s.set_data(dict(input_ids=ids, attention_mask=(ids > 0).long()))
        with torch.no_grad():
            out = model(torch.randn(1, 3, *size), [s], mode='tensor')
        assert out.shape[-2:] == (size[0] // 4, size[1] // 4)
