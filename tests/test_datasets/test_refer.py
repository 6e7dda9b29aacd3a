"""Tests of the REFER reader: restricted unpickler, refs files, split rules, converter."""
import importlib.util
import io
import json
import os
import os.path as osp
import pickle
import pickletools

import pytest

from mmseg_ris.datasets.refer import (ReferAnnotations, RestrictedUnpickler, default_image_dir,
                                      load_refs, save_refs_json, split_matches)

from fixtures_refer import (COCO_ANNOTATIONS, REFCOCO_UNC, make_refs,
                            py2_pickle_dumps, write_grefcoco, write_malicious_pickle,
                            write_py2_pickle, write_refclef, write_refcoco_family, write_refs,
                            write_rrefcoco)

TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
REPO = osp.dirname(TESTS_DIR)


def _anns():
    return {a[0]: dict(id=a[0], image_id=a[1], category_id=a[2]) for a in COCO_ANNOTATIONS}


def _opcodes(data: bytes):
    return [op.name for op, _, _ in pickletools.genops(data)]


@pytest.fixture(scope='module')
def refer_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('refer'))
    write_refcoco_family(root, images=False)
    write_rrefcoco(root)
    write_grefcoco(root)
    write_refclef(root)
    return root


def _load_converter():
    path = osp.join(REPO, 'tools', 'dataset_converters', 'refer_pickle_to_json.py')
    spec = importlib.util.spec_from_file_location('refer_pickle_to_json', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- unpickler
def test_py2_pickle_with_bytes_keys_loads(tmp_path):
    refs = make_refs(REFCOCO_UNC[:1], _anns())
    data = py2_pickle_dumps(refs)
    ops = _opcodes(data)
    # The file really is Python-2 style: protocol 2, byte strings, unicode for non-ASCII,
    # memo references, and no global at all.
    assert ops[0] == 'PROTO' and data[1] == 2
    assert 'SHORT_BINSTRING' in ops and 'BINUNICODE' in ops and 'BINGET' in ops
    assert not {'GLOBAL', 'STACK_GLOBAL', 'REDUCE'} & set(ops)
    raw = pickle.loads(data, encoding='bytes')
    assert b'sentences' in raw[0] and raw[0][b'split'] == b'train'

    path = write_py2_pickle(refs, str(tmp_path / 'refs(unc).p'))
    loaded = load_refs(path)
    assert loaded == refs
    assert all(isinstance(k, str) for k in loaded[0])
    assert loaded[0]['sentences'][2]['raw'] == 'café au lait mug ☕ 左边的杯子'


def test_py2_byte_strings_decode_utf8_then_latin1(tmp_path):
    # Python 2 str holding UTF-8 bytes, and one holding Latin-1 bytes (not valid UTF-8).
    obj = [{b'raw': b'cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e', b'sent': b'na\xefve', b'n': 70000,
            b'big': 2**40, b'neg': -5, b'f': 0.25, b'flag': True, b'none': None,
            b'tup': (1, b'a')}]
    path = write_py2_pickle(obj, str(tmp_path / 'refs(unc).p'))
    with pytest.raises(UnicodeDecodeError):
        # Python 3's default ASCII decoding fails on such files: why encoding='bytes' is used.
        with open(path, 'rb') as f:
            pickle.load(f)
    assert load_refs(path) == [{'raw': 'crème brûlée', 'sent': 'naïve', 'n': 70000,
                                'big': 2**40, 'neg': -5, 'f': 0.25, 'flag': True,
                                'none': None, 'tup': [1, 'a']}]


# Pickles name the defining module: os.system is posix.system (nt.system on Windows), and
# protocol 2 writes builtins as Python 2's __builtin__.
@pytest.mark.parametrize('kind,global_name', [('system', f'{os.system.__module__}.system'),
                                              ('eval', '__builtin__.eval')])
def test_malicious_pickle_refused_and_payload_never_runs(tmp_path, kind, global_name):
    marker = str(tmp_path / f'pwned_{kind}')
    path = write_malicious_pickle(str(tmp_path / 'refcoco' / 'refs(unc).p'), marker, kind)
    with pytest.raises(pickle.UnpicklingError) as err:
        load_refs(path)
    message = str(err.value)
    assert 'refs(unc).p tries to import' in message and global_name in message
    assert 'refused: REFER pickles hold only plain containers' in message
    assert not osp.exists(marker)

    # Through the annotation reader too (the refs file is read before anything else is used).
    with open(tmp_path / 'refcoco' / 'instances.json', 'w') as f:
        json.dump(dict(images=[], annotations=[], categories=[]), f)
    with pytest.raises(pickle.UnpicklingError, match=r'refs\(unc\)\.p tries to import'):
        ReferAnnotations(str(tmp_path), 'refcoco', 'unc')
    assert not osp.exists(marker)

    # Control: the payload is live, an unrestricted pickle.load would run it.
    with open(path, 'rb') as f:
        pickle.load(f)
    assert osp.exists(marker)


def test_persistent_id_refused():

    class Pickler(pickle.Pickler):

        def persistent_id(self, obj):
            return 'external-object' if obj == 'secret' else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump([{'a': 'secret'}])
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match='persistent id'):
        RestrictedUnpickler(buffer, filename='refs(x).p').load()


def test_protocol5_set_refused(tmp_path):
    # Sets need no global under protocol 4+, but are not plain REFER content.
    path = tmp_path / 'refs(unc).p'
    path.write_bytes(pickle.dumps([{'s': {1, 2}}], protocol=5))
    with pytest.raises(pickle.UnpicklingError, match='holds a set'):
        load_refs(str(path))


# --------------------------------------------------------------------------- files
def test_json_round_trip_and_errors(tmp_path):
    refs = make_refs(REFCOCO_UNC, _anns())
    pickle_path = write_py2_pickle(refs, str(tmp_path / 'refs(unc).p'))
    json_path = str(tmp_path / 'refs(unc).json')
    save_refs_json(load_refs(pickle_path), json_path)
    assert load_refs(json_path) == load_refs(pickle_path) == refs
    with open(json_path, encoding='utf-8') as f:
        assert '左边的杯子' in f.read()  # written as UTF-8, not \u escapes

    with pytest.raises(ValueError, match='dict key 3 is not a string'):
        save_refs_json([{3: 'x'}], str(tmp_path / 'bad.json'))
    assert not osp.exists(tmp_path / 'bad.json')
    with pytest.raises(FileNotFoundError, match=r'refs\(umd\)\.p'):
        load_refs(str(tmp_path / 'refs(umd).p'))
    (tmp_path / 'refs.txt').write_text('[]')
    with pytest.raises(ValueError, match='unknown refs file type'):
        load_refs(str(tmp_path / 'refs.txt'))
    (tmp_path / 'dict.json').write_text('{"refs": []}')
    with pytest.raises(ValueError, match='holds a list of refs, got dict'):
        load_refs(str(tmp_path / 'dict.json'))


def test_converter_round_trip(tmp_path):
    converter = _load_converter()
    root = str(tmp_path)
    write_refcoco_family(root, images=False)
    write_grefcoco(root)
    write_py2_pickle(json.load(open(osp.join(root, 'grefcoco', 'grefs(unc).json'))),
                     osp.join(root, 'grefcoco', 'grefs(unc).p'))
    os.remove(osp.join(root, 'grefcoco', 'grefs(unc).json'))

    folders = [osp.join(root, name) for name in ('refcoco', 'refcocog', 'grefcoco')]
    assert converter.main(folders) == 0
    for stem in ('refcoco/refs(unc)', 'refcocog/refs(umd)', 'refcocog/refs(google)',
                 'grefcoco/grefs(unc)'):
        src, dst = osp.join(root, stem + '.p'), osp.join(root, stem + '.json')
        assert osp.isfile(dst)
        assert load_refs(dst) == load_refs(src)
    # refcoco+ was not named: untouched.
    assert not osp.exists(osp.join(root, 'refcoco+', 'refs(unc).json'))

    # Existing JSON is kept unless --overwrite; a single file converts too.
    single = osp.join(root, 'refcoco+', 'refs(unc).p')
    assert converter.convert_file(single) == osp.join(root, 'refcoco+', 'refs(unc).json')
    assert converter.convert_file(single) is None
    assert converter.main([root, '--recursive', '--overwrite']) == 0
    assert converter.main([osp.join(root, 'nothing-here')]) == 1

    # The reader takes the JSON once the pickle is gone, with identical content.
    pickled = ReferAnnotations(root, 'refcocog', 'umd')
    os.remove(osp.join(root, 'refcocog', 'refs(umd).p'))
    converted = ReferAnnotations(root, 'refcocog', 'umd')
    assert converted.refs_file.endswith('refs(umd).json')
    assert converted.refs == pickled.refs


def test_converter_progress_bar_and_no_progress(tmp_path, capsys):
    converter = _load_converter()
    roots = {}
    for mode in ('bar', 'quiet'):
        roots[mode] = str(tmp_path / mode)
        write_refcoco_family(roots[mode], images=False)
    # Four files: refcoco, refcoco+, refcocog (umd, google).
    assert converter.main([roots['bar'], '--recursive']) == 0
    bar_out, bar_err = capsys.readouterr()
    assert converter.main([roots['quiet'], '--recursive', '--no-progress']) == 0
    quiet_out, quiet_err = capsys.readouterr()

    # Same report lines (up to the root), and no bar at all with --no-progress.
    assert bar_out.replace(roots['bar'], 'ROOT') == quiet_out.replace(roots['quiet'], 'ROOT')
    assert bar_out.count('\nconverted ') + bar_out.startswith('converted ') == 4
    assert quiet_err == ''
    # The bar counted the four files and ended on its own line.
    states = [s for s in bar_err.replace('\r', '\n').split('\n') if s.strip()]
    assert states[-1].startswith('refs files: 100%') and ' 4/4 ' in states[-1]
    assert bar_err.endswith('\n')
    # Byte-identical JSON either way.
    for stem in ('refcoco/refs(unc)', 'refcoco+/refs(unc)', 'refcocog/refs(umd)',
                 'refcocog/refs(google)'):
        with open(osp.join(roots['bar'], stem + '.json'), 'rb') as a, \
                open(osp.join(roots['quiet'], stem + '.json'), 'rb') as b:
            assert a.read() == b.read()

    # Skips and errors are reported the same way, errors on stderr above the bar.
    write_malicious_pickle(osp.join(roots['quiet'], 'refclef', 'refs(unc).p'),
                           str(tmp_path / 'pwned'))
    assert converter.main([roots['quiet'], '--recursive', '--no-progress']) == 1
    quiet_out, quiet_err = capsys.readouterr()
    assert quiet_out.count('skipped ') == 4
    assert quiet_err.startswith('error: ') and quiet_err.count('\n') == 1
    assert 'refs(unc).p tries to import' in quiet_err
    os.replace(osp.join(roots['quiet'], 'refclef'), osp.join(roots['bar'], 'refclef'))
    assert converter.main([roots['bar'], '--recursive']) == 1
    bar_out, bar_err = capsys.readouterr()
    assert bar_out.count('skipped ') == 4
    # The error line starts after the bar was cleared, not glued to its text.
    error = bar_err.index('error: ')
    assert bar_err[error - 1] == '\r' and 'refs(unc).p tries to import' in bar_err
    assert ' 5/5 ' in [s for s in bar_err.replace('\r', '\n').split('\n') if s.strip()][-1]


def test_converter_refuses_non_pickle_and_malicious(tmp_path, capsys):
    converter = _load_converter()
    path = tmp_path / 'instances.json'
    path.write_text('{}')
    with pytest.raises(ValueError, match='not a refs pickle'):
        converter.convert_file(str(path))

    marker = str(tmp_path / 'pwned')
    write_malicious_pickle(str(tmp_path / 'evil' / 'refs(unc).p'), marker)
    write_py2_pickle(make_refs(REFCOCO_UNC, _anns()), str(tmp_path / 'evil' / 'refs(google).p'))
    assert converter.main([str(tmp_path / 'evil')]) == 1
    assert 'refs(unc).p tries to import' in capsys.readouterr().err
    assert not osp.exists(marker) and not osp.exists(tmp_path / 'evil' / 'refs(unc).json')
    # The good file next to it is still converted.
    assert load_refs(str(tmp_path / 'evil' / 'refs(google).json')) == make_refs(
        REFCOCO_UNC, _anns())


# --------------------------------------------------------------------------- splits
@pytest.mark.parametrize('query,ref_split,expected', [
    ('testA', 'testA', True), ('testA', 'testAB', True), ('testB', 'testAB', True),
    ('testA', 'testB', False), ('testC', 'testAC', True), ('testAB', 'testA', False),
    ('testAB', 'testAB', True), ('test', 'testB', True), ('test', 'val', False),
    ('train', 'train', True), ('train', 'trainval', False), ('val', 'val', True)
])
def test_split_matches(query, ref_split, expected):
    assert split_matches(query, ref_split) is expected


def test_refcoco_split_semantics(refer_root):
    refer = ReferAnnotations(refer_root, 'refcoco', 'unc')
    assert refer.refs_file == osp.join(refer_root, 'refcoco', 'refs(unc).p')
    assert refer.splits == ['testA', 'testAB', 'testB', 'train', 'val']
    # Hand-computed from REFCOCO_UNC: ref 8 is 'testAB', so it is in testA, testB and test.
    assert refer.ref_ids('train') == [1, 2, 3, 9]
    assert refer.ref_ids('val') == [4, 5]
    assert refer.ref_ids('testA') == [6, 8]
    assert refer.ref_ids('testB') == [7, 8]
    assert refer.ref_ids('testAB') == [8]
    assert refer.ref_ids('test') == [6, 7, 8]
    assert refer.image_ids('testA') == {4, 6}
    assert refer.image_ids('train') == {1, 2, 7}
    with pytest.raises(ValueError, match=r"split 'testC' matches no refs.*'testAB'"):
        refer.ref_ids('testC')
    assert len(refer.imgs) == 8 and len(refer.anns) == 10 and refer.cats[2] == 'cup'


def test_refcocog_and_refclef_splits(refer_root):
    umd = ReferAnnotations(refer_root, 'refcocog', 'umd')
    assert umd.ref_ids('test') == [205] and umd.ref_ids('train') == [201, 202, 203]
    google = ReferAnnotations(refer_root, 'refcocog', 'google')
    assert google.ref_ids('val') == [302]
    clef = ReferAnnotations(refer_root, 'refclef', 'unc')
    assert [clef.ref_ids(s) for s in ('testA', 'testB', 'testC')] == [[3], [4], [5]]
    assert ReferAnnotations(refer_root, 'refclef', 'berkeley').ref_ids('test') == [13]
    seg = clef.anns[501]['segmentation']
    assert isinstance(seg, list) and len(seg) == 2 and isinstance(seg[0]['counts'], str)
    assert default_image_dir('refclef') == 'images/saiapr_tc-12'
    assert default_image_dir('refcoco+') == 'images/mscoco/images/train2014'


def test_sentences_exist_and_text(refer_root):
    refer = ReferAnnotations(refer_root, 'refcoco', 'unc')
    assert refer.ref_sentences(1) == [
        dict(sent_id=10, text='the red cup', exist=True, expr_type=None),
        dict(sent_id=11, text='cup on the left', exist=True, expr_type=None),
        dict(sent_id=12, text='café au lait mug ☕ 左边的杯子', exist=True, expr_type=None),
    ]
    assert [s['text'] for s in refer.ref_sentences(2, 'sent')] == [
        'two-part thing on the right', 'right object']
    rref = ReferAnnotations(refer_root, 'rrefcoco', 'unc')
    assert [(s['sent_id'], s['exist']) for s in rref.ref_sentences(1)] == [(10, True),
                                                                           (11, False),
                                                                           (12, True)]
    assert [s['exist'] for s in rref.ref_sentences(4)] == [True, False, True]


def test_grefcoco(refer_root):
    refer = ReferAnnotations(refer_root, 'grefcoco', 'unc')
    assert refer.refs_file.endswith('grefs(unc).json')
    assert refer.ref_ann_ids(1001) == [11, 12] and refer.ref_category_id(1001) == 2
    assert refer.ref_ann_ids(1002) == [] and refer.ref_category_id(1002) == -1
    assert refer.ref_sentences(1002) == [
        dict(sent_id=10020, text='the purple giraffe', exist=False, expr_type=None)]
    # The empty expression of ref 1004 is left out.
    assert [s['sent_id'] for s in refer.ref_sentences(1004)] == [10040]
    assert refer.ref_ids('val') == [1003, 1004]


def test_pickle_preferred_over_json(tmp_path):
    root = str(tmp_path)
    write_refcoco_family(root, images=False)
    # A JSON next to the pickle with different content: the pickle wins.
    write_refs(make_refs(REFCOCO_UNC[:2], _anns()), osp.join(root, 'refcoco', 'refs(unc)'),
               'json')
    assert list(ReferAnnotations(root, 'refcoco', 'unc').refs) == [1, 2, 3, 9, 4, 5, 6, 7, 8]
    explicit = ReferAnnotations(root, 'refcoco', 'unc', refs_file='refcoco/refs(unc).json')
    assert list(explicit.refs) == [1, 2]


# --------------------------------------------------------------------------- errors
def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ReferAnnotations(str(tmp_path), 'refcoco', 'unc')
    message = str(err.value)
    assert osp.join(str(tmp_path), 'refcoco', 'refs(unc).p') in message
    assert 'expected the REFER layout' in message
    write_refs(make_refs(REFCOCO_UNC, _anns()), str(tmp_path / 'refcoco' / 'refs(unc)'), 'p')
    with pytest.raises(FileNotFoundError, match=r'instances file not found: .*instances\.json'):
        ReferAnnotations(str(tmp_path), 'refcoco', 'unc')
    with pytest.raises(FileNotFoundError, match='refs_file .*nope.p does not exist'):
        ReferAnnotations(str(tmp_path), 'refcoco', 'unc', refs_file='nope.p')


def _broken_root(tmp_path, edit):
    root = str(tmp_path)
    write_refcoco_family(root, images=False)
    refs = make_refs(REFCOCO_UNC, _anns())
    edit(refs)
    write_refs(refs, osp.join(root, 'refcoco', 'refs(unc)'), 'p')
    return root


def test_dangling_ann_and_image_named(tmp_path):

    def dangling_ann(refs):
        refs[1]['ann_id'] = 99

    root = _broken_root(tmp_path / 'a', dangling_ann)
    with pytest.raises(ValueError) as err:
        ReferAnnotations(root, 'refcoco', 'unc')
    message = str(err.value)
    assert 'refs(unc).p: ref_id 2 refers to ann_id 99' in message
    assert 'instances.json' in message

    def dangling_image(refs):
        refs[0]['image_id'] = 1234

    with pytest.raises(ValueError, match=r'refs\(unc\)\.p: ref_id 1 refers to image_id 1234'):
        ReferAnnotations(_broken_root(tmp_path / 'b', dangling_image), 'refcoco', 'unc')

    def wrong_image(refs):
        refs[0]['ann_id'] = 21  # annotation of image 2, ref on image 1

    with pytest.raises(ValueError, match='ref_id 1 is on image_id 1 but its ann_id 21'):
        ReferAnnotations(_broken_root(tmp_path / 'c', wrong_image), 'refcoco', 'unc')

    def duplicate(refs):
        refs[1]['ref_id'] = 1

    with pytest.raises(ValueError, match='ref_id 1 appears twice'):
        ReferAnnotations(_broken_root(tmp_path / 'd', duplicate), 'refcoco', 'unc')


def test_sentence_without_text_named(tmp_path):

    def no_raw(refs):
        del refs[3]['sentences'][1]['raw']

    refer = ReferAnnotations(_broken_root(tmp_path, no_raw), 'refcoco', 'unc')
    with pytest.raises(ValueError) as err:
        refer.ref_sentences(9)
    assert "ref_id 9, sentences[1] (sent_id 91) has no text: key 'raw' is missing" in str(
        err.value)
    assert 'refs(unc).p' in str(err.value)
    assert refer.ref_sentences(9, 'sent')[1]['text'] == 'long rectangle'
