"""The code and the configs of ``docs/adding_a_method.md`` work as printed.

Convention in the Markdown (a marker is an HTML comment on its own line; only blank lines may stand
between it and the opening fence of a ```python block):

* ``<!-- test: run -->``: the block is executed. All such blocks share one namespace and run in
  page order, so a later block can use what an earlier one defined (the worked FiLM fusion, the
  example decode head).
* ``<!-- test: config PATH -->``: the block is a config file; it is written to ``configs/PATH``
  inside a scratch copy of the repository's ``configs/`` tree (so ``_base_`` paths resolve as they
  would in the repository) and loaded with ``mmengine.config.Config.fromfile``.
* Other blocks are shown only (shell commands, the ``__init__.py`` import line).

A marker that is not followed by a python block is an error, so a marked block cannot be skipped
silently. On top of running the page, the tests build the tiny models of ``tests/tiny_configs.py``
with the page's modules and check them against values computed here: the FiLM output against a
direct per-sample computation, shapes, gradients reaching every new parameter, and that a tiny model
whose only language path is the FiLM fusion fits one image with two expressions to two different
masks.
"""
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ris  # noqa: F401  (registers the package's modules)
from mmseg_ris.datasets.transforms.text import TokenizeText
from tiny_configs import (BERT_HIDDEN, HEAD_CHANNELS, IMG_SIZE, REPO_ROOT, STAGE_CHANNELS,
                          TOKENIZER, tiny_lavt_model)

DOC = osp.join(REPO_ROOT, 'docs', 'adding_a_method.md')
MARKER = re.compile(r'^<!--\s*test:\s*(?P<kind>run|config)(?:\s+(?P<path>\S+))?\s*-->\s*$')
# Modules the page registers; removed from the registry after the tests.
DOC_MODULES = ('FiLMFusion', 'SentenceGatedHead')
# The documented naming scheme {method}_{backbone}_{NxbB}-{schedule}_{dataset}-{size}.py
CONFIG_NAME = re.compile(
    r'^[a-z0-9-]+_[a-z0-9-]+_[a-z0-9-]+_\d+xb\d+-\d+[ek]_[a-z0-9+-]+-\d+x\d+\.py$')


def extract_blocks(text: str, source: str = DOC) -> list:
    """Marked python blocks of a Markdown text.

    Args:
        text (str): The Markdown.
        source (str): Name used in error messages.

    Returns:
        list[dict]: ``kind`` ('run' or 'config'), ``path`` (config path or None), ``code`` and
        ``line`` (1-based line of the first code line), in page order.
    """
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = MARKER.match(lines[i].strip())
        i += 1
        if not match:
            continue
        kind, path = match.group('kind'), match.group('path')
        where = f'{source}:{i}'
        if kind == 'config' and not path:
            raise ValueError(f'{where}: "test: config" needs a path relative to configs/')
        if kind == 'run' and path:
            raise ValueError(f'{where}: "test: run" takes no argument, got {path!r}')
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or lines[i].strip() != '```python':
            raise ValueError(
                f'{where}: the "test: {kind}" marker is not followed by a ```python block')
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != '```':
            end += 1
        if end >= len(lines):
            raise ValueError(f'{source}:{start}: the python block never closes')
        blocks.append(dict(kind=kind, path=path, code='\n'.join(lines[start:end]) + '\n',
                           line=start + 1))
        i = end + 1
    return blocks


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """One intra-op thread: faster on a small shared machine, and reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def blocks():
    with open(DOC, encoding='utf-8') as f:
        return extract_blocks(f.read())


@pytest.fixture(scope='module')
def doc_ns(blocks):
    """Run the page's ``test: run`` blocks in one namespace; undo their registrations afterwards."""
    init_default_scope('mmseg')
    registry = MODELS._module_dict
    # A module of the same name that exists already (e.g. once the example is added to the
    # package) is set aside while the page's version is registered, and put back afterwards.
    saved = {name: registry.pop(name) for name in DOC_MODULES if name in registry}
    ns = {'__name__': 'adding_a_method_doc'}
    try:
        for block in blocks:
            if block['kind'] == 'run':
                exec(compile(block['code'], f'{DOC}:{block["line"]}', 'exec'), ns)
        yield ns
    finally:
        for name in DOC_MODULES:
            registry.pop(name, None)
        registry.update(saved)


@pytest.fixture(scope='module')
def doc_configs(blocks, tmp_path_factory):
    """The page's ``test: config`` blocks, written into a scratch copy of configs/ and loaded."""
    root = tmp_path_factory.mktemp('doc_configs')
    configs = root / 'configs'
    # A copy, not links: writing a page config must never touch the repository.
    shutil.copytree(osp.join(REPO_ROOT, 'configs'), configs)
    paths = {}
    for block in blocks:
        if block['kind'] != 'config':
            continue
        target = configs / block['path']
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block['code'], encoding='utf-8')
        paths[block['path']] = str(target)
    return {rel: Config.fromfile(path) for rel, path in paths.items()}


# ----------------------------------------------------------------- the page
def test_extract_blocks_convention():
    text = '\n'.join([
        'intro', '<!-- test: run -->', '', '```python', 'a = 1', '```',
        '```python', 'shown_only = True', '```',
        '<!-- test: config x/y.py -->', '```python', "_base_ = ['../a.py']", '```'])
    got = extract_blocks(text, 'page.md')
    assert [(b['kind'], b['path'], b['code'], b['line']) for b in got] == [
        ('run', None, 'a = 1\n', 5), ('config', 'x/y.py', "_base_ = ['../a.py']\n", 12)]
    with pytest.raises(ValueError, match=r'page.md:1: the "test: run" marker is not followed'):
        extract_blocks('<!-- test: run -->\n```bash\nls\n```\n', 'page.md')
    with pytest.raises(ValueError, match='needs a path'):
        extract_blocks('<!-- test: config -->\n```python\nx = 1\n```\n', 'page.md')
    with pytest.raises(ValueError, match='never closes'):
        extract_blocks('<!-- test: run -->\n```python\nx = 1\n', 'page.md')


def test_page_has_the_documented_blocks(blocks):
    kinds = [b['kind'] for b in blocks]
    assert kinds.count('run') >= 3
    assert {b['path'] for b in blocks if b['kind'] == 'config'} == {
        'film/film_swin-b_bert-base_4xb8-40e_refcoco-480x480.py',
        'film/film-sgh_swin-b_bert-base_4xb8-40e_refcoco-480x480.py',
        'film/film-mg_swin-b_bert-base_4xb8-40e_refcoco-480x480.py',
        'film/film_tiny_synthetic.py',
        'film/film-mg_tiny_synthetic.py',
        'lavt/lavt-cat_swin-b_bert-base_4xb8-40e_refcoco-480x480.py',
        'lavt/lavt-cataux_swin-b_bert-base_4xb8-40e_refcoco-480x480.py',
    }


def test_run_blocks_register_the_modules(doc_ns):
    for name in DOC_MODULES:
        assert MODELS.get(name) is doc_ns[name]


def test_page_configs_load_and_inherit(doc_ns, doc_configs):
    for rel, cfg in doc_configs.items():
        assert cfg.model.type == 'RISEncoderDecoder', rel
        assert 'mmseg_ris' in cfg.custom_imports['imports'], rel
        name = osp.basename(rel)
        assert 'tiny_synthetic' in name or CONFIG_NAME.match(name), f'{rel}: not the naming scheme'

    full = doc_configs['film/film_swin-b_bert-base_4xb8-40e_refcoco-480x480.py']
    # _delete_ dropped PWAM's num_heads; the rest is LAVT's
    assert full.model.backbone.fusions == dict(type='FiLMFusion')
    assert full.find_unused_parameters is False
    assert full.model.backbone.embed_dims == 128 and full.model.decode_head.type == 'LAVTHead'
    assert full.train_dataloader.dataset.dataset_name == 'refcoco'
    assert full.train_dataloader.batch_size == 8 and full.train_cfg.max_epochs == 40

    sgh = doc_configs['film/film-sgh_swin-b_bert-base_4xb8-40e_refcoco-480x480.py']
    assert sgh.model.decode_head.type == 'SentenceGatedHead'
    assert sgh.model.decode_head.norm_cfg == dict(type='SyncBN', requires_grad=True)
    assert sgh.model.backbone.fusions == dict(type='FiLMFusion')

    mg_configs = (('film/film-mg_swin-b_bert-base_4xb8-40e_refcoco-480x480.py', 128, 768),
                  ('film/film-mg_tiny_synthetic.py', 32, 384))
    for rel, width, lang in mg_configs:
        cfg = doc_configs[rel]
        aux = cfg.model.auxiliary_head
        assert aux.type == 'MaskGroundingHead', rel
        # the last Swin stage is 8 times the embedding width; the pipeline's tokenizer is reused
        assert aux.in_channels == 8 * cfg.model.backbone.embed_dims == 8 * width, rel
        assert aux.lang_channels == lang, rel
        toks = [t['tokenizer'] for t in cfg.train_dataloader.dataset.pipeline
                if t['type'] == 'TokenizeText']
        assert toks == [aux.tokenizer], rel

    cat = doc_configs['lavt/lavt-cat_swin-b_bert-base_4xb8-40e_refcoco-480x480.py']
    head = MODELS.build(cat.model.decode_head)
    # a 1x1 convolution from the decoder's width to the 91 COCO ids (+ background)
    assert (head.conv_category.in_channels, head.conv_category.out_channels) == (512, 91)
    assert head.category_losses[0].loss_weight == 0.4
    assert 'auxiliary_head' not in cat.model
    # the category map is resized with the image; only training loads it
    steps = [t['type'] for t in cat.train_dataloader.dataset.pipeline]
    assert steps.index('LoadCategoryMap') < steps.index('Resize')
    assert cat.train_dataloader.dataset.with_image_anns is True
    assert 'with_image_anns' not in cat.val_dataloader.dataset

    cataux = doc_configs['lavt/lavt-cataux_swin-b_bert-base_4xb8-40e_refcoco-480x480.py']
    aux = cataux.model.auxiliary_head
    # Swin stage 3 is 4 times the embedding width
    assert aux.type == 'CategoryAuxHead' and aux.in_index == 2
    assert aux.in_channels == 4 * cataux.model.backbone.embed_dims
    assert isinstance(MODELS.build(aux).conv_seg, torch.nn.Conv2d)
    assert cataux.model.decode_head.category_aux is None
    assert cataux.train_dataloader.dataset.with_image_anns is True

    tiny = doc_configs['film/film_tiny_synthetic.py']
    assert tiny.model.backbone.fusions == dict(type='FiLMFusion')
    assert tiny.model.backbone.embed_dims == 32


# ----------------------------------------------------------------- the FiLM fusion
def test_film_matches_a_direct_computation(doc_ns):
    c, cl, hw = 6, 5, (3, 4)
    film = MODELS.build(dict(type='FiLMFusion', vis_channels=c, lang_channels=cl))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        film.film.weight.copy_(torch.randn(2 * c, cl, generator=g))
        film.film.bias.copy_(torch.randn(2 * c, generator=g))
    x = torch.randn(2, hw[0] * hw[1], c, generator=g)
    lang = torch.randn(2, 4, cl, generator=g)
    lang_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    x_stream, x_out, lang_out = film(x, hw, lang, lang_mask)

    weight, bias = film.film.weight.detach(), film.film.bias.detach()
    for b in range(2):
        real = [lang[b, t] for t in range(4) if lang_mask[b, t] == 1]
        sentence = sum(real) / len(real)
        params = weight @ sentence + bias
        gamma, beta = params[:c], params[c:]
        for p in range(hw[0] * hw[1]):
            expected = x[b, p] * (1 + gamma) + beta
            torch.testing.assert_close(x_stream[b, p], expected, rtol=1e-5, atol=1e-5)
    assert x_out is x_stream and lang_out is lang

    # padded words do not reach the output, whatever they hold
    lang_junk = lang.clone()
    lang_junk[0, 2:] = 1e4
    torch.testing.assert_close(film(x, hw, lang_junk, lang_mask)[0], x_stream)


def test_film_starts_as_identity_and_checks_its_inputs(doc_ns):
    film = MODELS.build(dict(type='FiLMFusion', vis_channels=8, lang_channels=4))
    film.init_weights()
    x, lang = torch.randn(1, 6, 8), torch.randn(1, 3, 4)
    mask = torch.ones(1, 3)
    assert torch.equal(film(x, (2, 3), lang, mask)[0], x)
    with pytest.raises(ValueError, match=r'FiLMFusion: x must be \(B, H\*W, 8\)'):
        film(torch.randn(1, 6, 7), (2, 3), lang, mask)
    with pytest.raises(ValueError, match='FiLMFusion: hw='):
        film(x, (2, 2), lang, mask)
    with pytest.raises(ValueError, match='FiLMFusion: lang_mask'):
        film(x, (2, 3), lang, torch.ones(1, 2))


# ----------------------------------------------------------------- tiny models
def make_batch(texts, masks, size=IMG_SIZE, seed=0):
    """One random image shared by every sample, the tokenised ``texts`` and 0/1 ``masks``."""
    tokenize = TokenizeText(tokenizer=TOKENIZER, max_length=20)
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, size, size, generator=g)
    samples = []
    for text, mask in zip(texts, masks):
        tokens = tokenize.transform(dict(text=text))
        ds = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         ori_shape=(size, size)))
        ds.set_data(dict(input_ids=torch.from_numpy(tokens['input_ids']),
                         attention_mask=torch.from_numpy(tokens['attention_mask'])))
        ds.gt_sem_seg = PixelData(data=mask[None].long())
        # the tiny configs' category_aux target: the referent as category 3
        ds.gt_category_map = PixelData(data=3 * mask[None].long())
        samples.append(ds)
    return image.expand(len(samples), -1, -1, -1).contiguous(), samples


def halves(size=IMG_SIZE):
    """Masks of the left and the right half of the image."""
    left = torch.zeros(size, size, dtype=torch.long)
    left[:, :size // 2] = 1
    return left, 1 - left


def tiny_film_model(doc_configs, **kwargs):
    """The tiny LAVT of tests/tiny_configs.py with the page's tiny config's fusion."""
    cfg = tiny_lavt_model(**kwargs)
    cfg['backbone']['fusions'] = doc_configs['film/film_tiny_synthetic.py'].model.backbone.fusions
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def film_params(model):
    return {n: p for n, p in model.named_parameters() if n.startswith('backbone.fusions.')}


def test_tiny_film_model_forward_loss_and_gradients(doc_ns, doc_configs):
    model = tiny_film_model(doc_configs)
    assert all(isinstance(f, doc_ns['FiLMFusion']) for f in model.backbone.fusions)
    inputs, samples = make_batch(['the left half', 'the right half'], halves())

    model.eval()
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
    # LAVT's decoder: two classes at stride 4
    assert logits.shape == (2, 2, IMG_SIZE // 4, IMG_SIZE // 4)

    model.train()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    assert torch.isfinite(losses['decode.loss_ce']) and losses['decode.loss_ce'] > 0
    losses['decode.loss_ce'].backward()
    params = film_params(model)
    # weight and bias of each of the four stages
    assert sorted(params) == [f'backbone.fusions.{i}.film.{k}' for i in range(4)
                              for k in ('bias', 'weight')]
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f'{name} gets no gradient'


def test_tiny_film_model_grounds_two_expressions_on_one_image(doc_configs):
    """Same image, two expressions, two targets: only the FiLM path can tell them apart.

    LAVT's decoder does not read the language, so without a working fusion both samples give the
    same prediction, and one prediction cannot overlap both halves by more than 0.5 IoU together.
    """
    model = tiny_film_model(doc_configs)
    left, right = halves()
    inputs, samples = make_batch(['the left half', 'the right half'], [left, right])
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(60):
        loss = model.loss(inputs, samples)['decode.loss_ce']
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    with torch.no_grad():
        preds = [ds.pred_sem_seg.data[0] for ds in model.predict(inputs, samples)]
    for pred, target in zip(preds, (left, right)):
        assert pred.shape == target.shape
        iou = ((pred == 1) & (target == 1)).sum() / ((pred == 1) | (target == 1)).sum()
        assert iou > 0.8, f'IoU {iou:.3f}: the expression does not steer the mask'


def test_sentence_gated_head_on_the_tiny_model(doc_ns, doc_configs):
    model = tiny_film_model(doc_configs)
    model.decode_head = MODELS.build(dict(
        type='SentenceGatedHead', in_channels=STAGE_CHANNELS, in_index=(0, 1, 2, 3),
        channels=HEAD_CHANNELS, lang_channels=BERT_HIDDEN, num_classes=2,
        norm_cfg=dict(type='BN', requires_grad=True), align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, class_weight=[0.9, 1.1],
                         avg_non_ignore=True, loss_weight=1.0)))
    torch.manual_seed(1)
    model.decode_head.init_weights()
    # the same image with two expressions: the head's sentence gate makes the logits differ
    inputs, samples = make_batch(['the left half', 'the right half'], halves())
    model.eval()
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
        preds = model.predict(inputs, samples)
    assert logits.shape == (2, 2, IMG_SIZE // 4, IMG_SIZE // 4)
    assert not torch.allclose(logits[0], logits[1])
    assert all(ds.pred_sem_seg.data.shape == (1, IMG_SIZE, IMG_SIZE) for ds in preds)

    model.train()
    losses = model.loss(inputs, samples)
    losses['decode.loss_ce'].backward()
    for name, p in model.decode_head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f'decode_head.{name} gets no gradient'


def test_mask_grounding_on_the_page_tiny_config(doc_ns, doc_configs):
    """The page's tiny FiLM + Mask Grounding config, built as written (real MiniLM text encoder)."""
    cfg = doc_configs['film/film-mg_tiny_synthetic.py']
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    size = cfg.model.data_preprocessor['size'][0]
    top = torch.zeros(size, size, dtype=torch.long)
    top[:size // 3, size // 4:size // 2] = 1
    inputs, samples = make_batch(['the red circle left of the square', 'the small blue star'],
                                 [top, top.flip(0)], size=size)
    model.eval()
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
    assert logits.shape == (2, 2, size // 4, size // 4)

    model.train()
    losses = model.loss(inputs, samples)
    assert {'decode.loss_ce', 'aux.loss_mg', 'aux.acc_mg'} <= set(losses)
    # cross entropy over the 30,522-word vocabulary starts near log(30522) ~ 10.3
    assert 5.0 < losses['aux.loss_mg'].item() < 20.0
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for name, p in list(film_params(model).items()) + [
            ('auxiliary_head.' + n, p) for n, p in model.auxiliary_head.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f'{name} gets no gradient'
