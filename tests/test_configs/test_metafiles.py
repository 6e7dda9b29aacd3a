"""The model-zoo metadata: ``model-index.yml`` and ``configs/<method>/metafile.yml``.

Checks the OpenMMLab structure (collections, models, results), that every config of a method folder
is listed once and loads, that the metadata agrees with the config it describes (input size, total
batch, training set), and that every published number equals the paper's table, transcribed below
independently of the metafiles. Numbers measured by mmseg_ris itself must appear in the document
named as their source.
"""
import glob
import os.path as osp
import re

import pytest
import yaml
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODEL_INDEX = osp.join(REPO, 'model-index.yml')
METHOD_DIRS = sorted(d for d in glob.glob(osp.join(REPO, 'configs', '*'))
                     if osp.isdir(d) and osp.basename(d) != '_base_')
TASK = 'Referring Image Segmentation'
METRICS = ('oIoU', 'mIoU', 'P@0.5', 'P@0.6', 'P@0.7', 'P@0.8', 'P@0.9')
MODEL_METADATA = ('backbone', 'crop size', 'training data', 'Training Resources', 'Batch Size')
# {method}_{backbone}_{NxbB}-{schedule}_{dataset}-{size}.py (docs/adding_a_method.md)
CONFIG_NAME = re.compile(r'^(?P<method>[a-z0-9-]+)_(?P<backbone>[a-z0-9-]+_[a-z0-9-]+)_'
                         r'(?P<gpus>\d+)xb(?P<per_gpu>\d+)-(?P<schedule>\d+[ek])_'
                         r'(?P<dataset>[a-z0-9+-]+)-(?P<h>\d+)x(?P<w>\d+)$')
# Result dataset names -> (dataset_name, split_by) of RefCOCODataset, and their evaluation splits.
DATASETS = {
    'RefCOCO': (('refcoco', 'unc'), ('val', 'testA', 'testB')),
    'RefCOCO+': (('refcoco+', 'unc'), ('val', 'testA', 'testB')),
    'RefCOCOg (UMD)': (('refcocog', 'umd'), ('val', 'test')),
    'RefCOCOg (Google)': (('refcocog', 'google'), ('val', )),
}

# Chng et al., "Mask Grounding for Referring Image Segmentation", CVPR 2024. Table 1 (oIoU): the
# LAVT row (Yang et al., CVPR 2022), the MagNet row (single dataset) and the MagNet‡ row (multiple
# datasets). Table 2 (RefCOCO val, every metric): the LAVT and MagNet rows.
PAPER_TABLE_1 = {
    'LAVT': {
        'RefCOCO val': 72.73, 'RefCOCO testA': 75.82, 'RefCOCO testB': 68.79,
        'RefCOCO+ val': 62.14, 'RefCOCO+ testA': 68.38, 'RefCOCO+ testB': 55.10,
        'RefCOCOg (UMD) val': 61.24, 'RefCOCOg (UMD) test': 62.09, 'RefCOCOg (Google) val': 60.50,
    },
    'MagNet': {
        'RefCOCO val': 75.24, 'RefCOCO testA': 78.24, 'RefCOCO testB': 71.05,
        'RefCOCO+ val': 66.16, 'RefCOCO+ testA': 71.32, 'RefCOCO+ testB': 58.14,
        'RefCOCOg (UMD) val': 65.36, 'RefCOCOg (UMD) test': 66.03, 'RefCOCOg (Google) val': 63.13,
    },
    'MagNet multiple datasets': {
        'RefCOCO val': 76.55, 'RefCOCO testA': 78.27, 'RefCOCO testB': 72.15,
        'RefCOCO+ val': 68.10, 'RefCOCO+ testA': 73.64, 'RefCOCO+ testB': 61.81,
        'RefCOCOg (UMD) val': 67.79, 'RefCOCOg (UMD) test': 69.29,
    },
}
PAPER_TABLE_2 = {
    'LAVT': {'oIoU': 72.73, 'mIoU': 74.46, 'P@0.5': 84.46, 'P@0.7': 75.28, 'P@0.9': 34.30},
    'MagNet': {'oIoU': 75.24, 'mIoU': 77.43, 'P@0.5': 87.79, 'P@0.7': 80.01, 'P@0.9': 38.77},
}


def load_yaml(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def metafile_path(method_dir):
    return osp.join(method_dir, 'metafile.yml')


def all_models():
    """(metafile path, collections by name, model) for every model of every metafile."""
    out = []
    for method_dir in METHOD_DIRS:
        path = metafile_path(method_dir)
        if not osp.isfile(path):
            continue
        meta = load_yaml(path)
        collections = {c['Name']: c for c in meta.get('Collections') or []}
        out.extend((path, collections, model) for model in meta.get('Models') or [])
    return out


MODELS = all_models()
MODEL_IDS = [m['Name'] for _, _, m in MODELS]


def test_model_index_imports_every_metafile():
    index = load_yaml(MODEL_INDEX)
    imports = index['Import']
    assert len(imports) == len(set(imports)), 'model-index.yml imports a metafile twice'
    for rel in imports:
        assert osp.isfile(osp.join(REPO, rel)), f'model-index.yml: {rel} does not exist'
    expected = [osp.relpath(metafile_path(d), REPO) for d in METHOD_DIRS]
    assert sorted(imports) == sorted(expected), (
        'every configs/<method>/ folder needs a metafile.yml imported by model-index.yml')
    assert 'configs/lavt/metafile.yml' in imports and 'configs/magnet/metafile.yml' in imports


@pytest.mark.parametrize('method_dir', METHOD_DIRS, ids=[osp.basename(d) for d in METHOD_DIRS])
def test_metafile_structure_and_coverage(method_dir):
    path = metafile_path(method_dir)
    meta = load_yaml(path)
    assert set(meta) == {'Collections', 'Models'}, f'{path}: top-level keys {sorted(meta)}'
    names = set()
    for coll in meta['Collections']:
        for key in ('Name', 'Metadata', 'Paper', 'README', 'Code'):
            assert key in coll, f'{path}: collection lacks {key}'
        assert coll['Paper']['Title'] and coll['Paper']['URL'].startswith('https://'), path
        assert osp.isfile(osp.join(REPO, coll['README'])), f'{path}: README {coll["README"]}'
        assert osp.isfile(osp.join(REPO, coll['Code']['URL'])), f'{path}: Code {coll["Code"]}'
        assert coll['Metadata']['Training Data'], path
        names.add(coll['Name'])

    listed = [m['Config'] for m in meta['Models']]
    on_disk = sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(method_dir, '*.py')))
    assert sorted(listed) == on_disk, (
        f'{path}: configs listed {sorted(listed)} vs on disk {on_disk}')
    for model in meta['Models']:
        assert model['In Collection'] in names, f'{path}: {model["Name"]} in unknown collection'


def test_model_names_unique():
    assert MODEL_IDS and len(MODEL_IDS) == len(set(MODEL_IDS))


@pytest.mark.parametrize('entry', MODELS, ids=MODEL_IDS)
def test_model_entry_matches_its_config(entry):
    path, _, model = entry
    name = model['Name']
    config = osp.join(REPO, model['Config'])
    assert osp.isfile(config), f'{path}: {name}: Config {model["Config"]} does not exist'
    assert osp.splitext(osp.basename(config))[0] == name, f'{path}: Name differs from the file'
    for key in MODEL_METADATA:
        assert key in model['Metadata'], f'{path}: {name} lacks Metadata.{key}'

    cfg = Config.fromfile(config)
    assert cfg.model.type == 'RISEncoderDecoder'
    size = tuple(cfg.model.data_preprocessor['size'])
    assert model['Metadata']['crop size'] == f'({size[0]}, {size[1]})', name

    batch = model['Metadata']['Batch Size']
    parts = CONFIG_NAME.match(name)
    if name.endswith('_tiny_synthetic'):
        assert batch == cfg.train_dataloader.batch_size, name
        return
    assert parts, f'{name} does not follow {{method}}_{{backbone}}_{{NxbB}}-{{schedule}}_' \
                  f'{{dataset}}-{{size}}'
    assert (int(parts['h']), int(parts['w'])) == size, name
    assert int(parts['per_gpu']) == cfg.train_dataloader.batch_size, name
    assert batch == int(parts['gpus']) * int(parts['per_gpu']), name


def train_sets(cfg):
    """(dataset_name, split_by) of every training dataset of a config."""
    ds = cfg.train_dataloader.dataset
    subsets = ds.datasets if ds.type == 'ConcatDataset' else [ds]
    return {(d.dataset_name, d.split_by) for d in subsets}


@pytest.mark.parametrize('entry', MODELS, ids=MODEL_IDS)
def test_results_are_the_published_ones(entry):
    path, collections, model = entry
    name = model['Name']
    results = model.get('Results') or []
    seen = set()
    for res in results:
        where = f'{path}: {name}: {res.get("Dataset")}'
        assert res['Task'] == TASK, where
        assert res['Dataset'] not in seen, f'{where} listed twice'
        seen.add(res['Dataset'])
        metrics = res['Metrics']
        assert metrics and set(metrics) <= set(METRICS), f'{where}: metrics {sorted(metrics)}'
        for key, value in metrics.items():
            assert isinstance(value, (int, float)) and 0 <= value <= 100, f'{where}: {key}={value}'

        source = res['Source']
        if source.startswith('mmseg_ris'):
            # our own figures: they must be in the document the source names
            doc = re.search(r'docs/[\w./-]+\.md|configs/[\w+-]+/README\.md', source)
            assert doc, f'{where}: Source names no document'
            with open(osp.join(REPO, doc.group(0)), encoding='utf-8') as f:
                text = f.read()
            for key, value in metrics.items():
                assert f'{value:.2f}' in text, f'{where}: {key}={value} not in {doc.group(0)}'
            continue

        assert source.startswith('paper'), f'{where}: Source must start with "paper" or "mmseg_ris"'
        row = model['In Collection']
        assert row in collections
        if 'multiple datasets' in source:
            row = f'{row} multiple datasets'
        assert metrics['oIoU'] == PAPER_TABLE_1[row][res['Dataset']], where
        others = {k: v for k, v in metrics.items() if k != 'oIoU'}
        if others:
            assert res['Dataset'] == 'RefCOCO val' and row in PAPER_TABLE_2, where
            for key, value in others.items():
                assert value == PAPER_TABLE_2[row][key], f'{where}: {key}'

        # the numbers belong to a model trained on that dataset, scored on one of its splits
        dataset, split = res['Dataset'].rsplit(' ', 1)
        ids, splits = DATASETS[dataset]
        assert split in splits, f'{where}: {dataset} has no split {split}'
        assert ids in train_sets(Config.fromfile(osp.join(REPO, model['Config']))), (
            f'{where}: the config does not train on {dataset}')


def test_every_full_size_config_has_paper_results_or_says_why():
    """Configs of a paper setting carry its numbers; LAVT + MG has none at this recipe."""
    without = sorted(m['Name'] for _, _, m in MODELS
                     if not m.get('Results') and not m['Name'].endswith('_tiny_synthetic'))
    assert without == ['lavt-mg_swin-b_bert-base_4xb8-40e_refcoco-480x480']
