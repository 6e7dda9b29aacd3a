"""Read REFER annotations: ``refs(<split_by>).p`` / ``.json`` plus ``instances.json``.

The REFER toolkit (RefCOCO, RefCOCO+, RefCOCOg, RefCLEF and the R-RefCOCO and
gRefCOCO variants) stores referring expressions as Python 2 pickles. Unpickling
an arbitrary file can run arbitrary code, so pickles are read through
:class:`RestrictedUnpickler`, which builds plain containers only and refuses
every global import. ``tools/dataset_converters/refer_pickle_to_json.py``
turns the pickles into JSON files that :func:`load_refs` reads equally well.

Expected layout (LAVT / MagNet)::

    data_root/
      images/mscoco/images/train2014/   COCO images (RefCOCO, RefCOCO+, G-Ref, gRefCOCO)
      images/saiapr_tc-12/              ReferItGame images (RefCLEF)
      refcoco/instances.json, refs(unc).p, refs(google).p
      refcoco+/instances.json, refs(unc).p
      refcocog/instances.json, refs(umd).p, refs(google).p
      refclef/instances.json, refs(unc).p, refs(berkeley).p
      grefcoco/instances.json, grefs(unc).json
"""
import io
import json
import os
import os.path as osp
import pickle
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Set

# Image folders relative to ``data_root``; everything but RefCLEF uses COCO train2014.
COCO_IMAGE_DIR = 'images/mscoco/images/train2014'
DEFAULT_IMAGE_DIRS = {'refclef': 'images/saiapr_tc-12'}

# REFER's split rules (``REFER.getRefIds``): a single-letter test split also takes the
# refs of the combined splits that contain its letter (``testA`` includes ``testAB``).
LETTER_TEST_SPLITS = ('testA', 'testB', 'testC')
PAIRED_TEST_SPLITS = ('testAB', 'testBC', 'testAC')

PICKLE_SUFFIXES = ('.p', '.pkl', '.pickle')
EXPECTED_LAYOUT = ('expected the REFER layout <data_root>/<dataset_name>/refs(<split_by>).p '
                   '(or refs(<split_by>).json, or grefs(<split_by>).json for gRefCOCO) next to '
                   '<data_root>/<dataset_name>/instances.json, e.g. data/refcoco/refs(unc).p')


def default_image_dir(dataset_name: str) -> str:
    """Image folder of a REFER dataset, relative to ``data_root``.

    Args:
        dataset_name (str): E.g. ``'refcoco'``, ``'refclef'``.

    Returns:
        str: ``'images/saiapr_tc-12'`` for RefCLEF, ``'images/mscoco/images/train2014'`` otherwise.
    """
    return DEFAULT_IMAGE_DIRS.get(dataset_name, COCO_IMAGE_DIR)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds plain containers, strings, numbers, bools and None only.

    Every attempt to load a global (a class, a function such as ``os.system``) or a
    persistent id raises :class:`pickle.UnpicklingError` naming the file and the
    global, before anything is called, so a malicious ``__reduce__`` never runs.
    Python 2 ``str`` objects are read as ``bytes`` (``encoding='bytes'``) rather than
    decoded as ASCII, which fails on non-ASCII text; :func:`load_refs` converts them.

    Args:
        file (BinaryIO): The open pickle file.
        filename (str, optional): Name used in error messages. Defaults to
            ``file.name`` when the file has one.
    """

    def __init__(self, file: io.BufferedIOBase, filename: Optional[str] = None) -> None:
        super().__init__(file, encoding='bytes')
        self.filename = filename or getattr(file, 'name', '<pickle stream>')

    def find_class(self, module: str, name: str) -> Any:
        """Refuse every global.

        Args:
            module (str): The module the pickle wants to import from.
            name (str): The attribute it wants.

        Raises:
            pickle.UnpicklingError: Always.
        """
        module, name = _text(module), _text(name)
        raise pickle.UnpicklingError(
            f'{osp.basename(self.filename)} tries to import {module}.{name}; refused: REFER '
            f'pickles hold only plain containers (file: {self.filename})')

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids, which would hand control to external objects.

        Args:
            pid: The persistent id.

        Raises:
            pickle.UnpicklingError: Always.
        """
        raise pickle.UnpicklingError(
            f'{osp.basename(self.filename)} holds a persistent id ({pid!r}); refused: REFER '
            f'pickles hold only plain containers (file: {self.filename})')


def _text(value: Any) -> Any:
    """Decode bytes as UTF-8, falling back to Latin-1 (every byte string decodes)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode('utf-8')
        except UnicodeDecodeError:
            return bytes(value).decode('latin-1')
    return value


def _to_plain(obj: Any, path: str) -> Any:
    """Turn an unpickled object into JSON-like data: bytes -> str, tuple -> list.

    Tuples become lists so a pickle and its JSON conversion load identically.

    Args:
        obj: Output of :class:`RestrictedUnpickler`.
        path (str): File name for error messages.

    Returns:
        The converted object.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray)):
        return _text(obj)
    if isinstance(obj, (list, tuple)):
        return [_to_plain(item, path) for item in obj]
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            new_key = _to_plain(key, path)
            if isinstance(new_key, list):
                raise pickle.UnpicklingError(f'{path}: dict key {key!r} is a tuple; REFER refs '
                                             f'have string keys')
            if new_key in out:
                raise ValueError(f'{path}: dict key {key!r} collides with another key after '
                                 f'decoding bytes to str')
            out[new_key] = _to_plain(value, path)
        return out
    raise pickle.UnpicklingError(
        f'{osp.basename(path)} holds a {type(obj).__name__}; refused: REFER pickles hold only '
        f'plain containers (file: {path})')


def load_refs(path: str) -> List[dict]:
    """Load a REFER refs file.

    Args:
        path (str): ``refs(<split_by>).p`` (also ``.pkl`` / ``.pickle``; read with
            :class:`RestrictedUnpickler`) or its ``.json`` conversion.

    Returns:
        list[dict]: The refs, with every byte string decoded to ``str``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: For an unknown suffix or a file that is not a list of dicts.
        pickle.UnpicklingError: If the pickle imports anything.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'REFER refs file not found: {path}; {EXPECTED_LAYOUT}')
    suffix = osp.splitext(path)[1].lower()
    if suffix in PICKLE_SUFFIXES:
        with open(path, 'rb') as f:
            refs = _to_plain(RestrictedUnpickler(f, filename=path).load(), path)
    elif suffix == '.json':
        with open(path, encoding='utf-8') as f:
            try:
                refs = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}: not valid JSON ({err})') from err
    else:
        raise ValueError(f'{path}: unknown refs file type {suffix!r}; expected one of '
                         f'{PICKLE_SUFFIXES + (".json",)}')
    if not isinstance(refs, list):
        raise ValueError(f'{path}: a REFER refs file holds a list of refs, got '
                         f'{type(refs).__name__}')
    for index, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise ValueError(f'{path}: refs[{index}] is a {type(ref).__name__}, not a dict')
    return refs


def _check_json_keys(obj: Any, path: str) -> None:
    """JSON turns int keys into strings; refuse them so a round trip stays exact."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f'{path}: dict key {key!r} is not a string; JSON would '
                                 f'change it, so refs with such keys cannot be converted')
            _check_json_keys(value, path)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _check_json_keys(item, path)


def save_refs_json(refs: List[dict], path: str) -> None:
    """Write refs as UTF-8 JSON, atomically (a partial file never appears at ``path``).

    Args:
        refs (list[dict]): Refs as returned by :func:`load_refs`.
        path (str): Output ``.json`` file.

    Raises:
        ValueError: If a dict key is not a string.
    """
    _check_json_keys(refs, path)
    folder = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.refs-', suffix='.json.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(refs, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def split_matches(query: str, ref_split: str) -> bool:
    """REFER's rule for whether a ref with split ``ref_split`` belongs to ``query``.

    ``testA`` / ``testB`` / ``testC`` take every test split containing that letter
    (``testAB`` counts for ``testA`` and ``testB``); ``testAB`` / ``testBC`` / ``testAC``
    match exactly; ``test`` takes every split containing ``test``; any other name
    (``train``, ``val``) matches exactly.

    Args:
        query (str): The requested split.
        ref_split (str): A ref's ``split`` field.

    Returns:
        bool: Whether the ref is in the requested split.
    """
    if query in LETTER_TEST_SPLITS:
        return ref_split.startswith('test') and query[-1] in ref_split[len('test'):]
    if query == 'test':
        return 'test' in ref_split
    return ref_split == query


def select_ref_ids(refs: Iterable[dict], split: str, source: str) -> List[int]:
    """Ids of the refs in ``split``, in file order.

    Args:
        refs (Iterable[dict]): Refs with ``ref_id`` and ``split``.
        split (str): Requested split (see :func:`split_matches`).
        source (str): File name for error messages.

    Returns:
        list[int]: Matching ref ids.

    Raises:
        ValueError: If no ref matches, listing the splits the file has.
    """
    refs = list(refs)
    ids = [ref['ref_id'] for ref in refs if split_matches(split, ref['split'])]
    if not ids:
        available = sorted({ref['split'] for ref in refs})
        raise ValueError(f'{source}: split {split!r} matches no refs; the file has splits '
                         f'{available}')
    return ids


def find_refs_file(data_root: str, dataset_name: str, split_by: str,
                   refs_file: Optional[str] = None) -> str:
    """Locate the refs file of a REFER dataset.

    Args:
        data_root (str): Root of the REFER layout.
        dataset_name (str): Dataset folder, e.g. ``'refcoco'``.
        split_by (str): Partition, e.g. ``'unc'``.
        refs_file (str, optional): Explicit file; relative paths are joined with
            ``data_root`` (mmengine's ``ann_file`` habit).

    Returns:
        str: The path: ``refs(<split_by>).p``, else ``refs(<split_by>).json``, else the
        gRefCOCO names ``grefs(<split_by>).json`` / ``grefs(<split_by>).p``.

    Raises:
        FileNotFoundError: Naming every path tried and the expected layout.
    """
    if refs_file is not None:
        path = refs_file if osp.isabs(refs_file) else osp.join(data_root, refs_file)
        if not osp.isfile(path):
            raise FileNotFoundError(f'refs_file {path} does not exist')
        return path
    folder = osp.join(data_root, dataset_name)
    candidates = [
        osp.join(folder, name) for name in (f'refs({split_by}).p', f'refs({split_by}).json',
                                            f'grefs({split_by}).json', f'grefs({split_by}).p')
    ]
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(f'no refs file for dataset {dataset_name!r} split_by {split_by!r}: '
                            f'tried {candidates}; {EXPECTED_LAYOUT}')


class ReferAnnotations:
    """Index of one REFER dataset: its refs plus the COCO-style ``instances.json``.

    Supports RefCOCO / RefCOCO+ (``unc``), RefCOCOg (``umd``, ``google``), RefCLEF
    (``unc``, ``berkeley``; segmentations may be lists of RLE dicts), R-RefCOCO
    (sentences carrying ``exist``) and gRefCOCO (``grefs(unc).json`` with ``ann_id`` a
    list and ``[-1]`` meaning no target). Every ref is checked when the index is built:
    a ref whose image or annotation is missing from ``instances.json`` raises an error
    naming the file and the ref id.

    Args:
        data_root (str): Root of the REFER layout (see the module docstring).
        dataset_name (str): Dataset folder under ``data_root``, e.g. ``'refcoco+'``.
        split_by (str): Partition, e.g. ``'unc'``, ``'umd'``, ``'google'``.
        refs_file (str, optional): Refs file overriding the default
            ``<data_root>/<dataset_name>/refs(<split_by>).p``. Relative paths are joined
            with ``data_root``.
        instances_file (str, optional): Overrides
            ``<data_root>/<dataset_name>/instances.json``; relative to ``data_root``.

    Attributes:
        refs (dict[int, dict]): Refs by ref id, in file order.
        anns (dict[int, dict]): Annotations by id.
        imgs (dict[int, dict]): Images by id.
        cats (dict[int, str]): Category names by id.
    """

    REF_KEYS = ('ref_id', 'image_id', 'ann_id', 'split', 'sentences')
    IMAGE_KEYS = ('id', 'file_name', 'height', 'width')

    def __init__(self,
                 data_root: str,
                 dataset_name: str,
                 split_by: str,
                 refs_file: Optional[str] = None,
                 instances_file: Optional[str] = None) -> None:
        self.data_root = data_root
        self.dataset_name = dataset_name
        self.split_by = split_by
        self.refs_file = find_refs_file(data_root, dataset_name, split_by, refs_file)
        if instances_file is None:
            instances_file = osp.join(data_root, dataset_name, 'instances.json')
        elif not osp.isabs(instances_file):
            instances_file = osp.join(data_root, instances_file)
        self.instances_file = instances_file
        instances = self._load_instances(instances_file)
        self._index_instances(instances)
        self._index_refs(load_refs(self.refs_file))

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _load_instances(path: str) -> dict:
        """Read ``instances.json`` with plain json (pycocotools is not needed)."""
        if not osp.isfile(path):
            raise FileNotFoundError(f'instances file not found: {path}; {EXPECTED_LAYOUT}')
        with open(path, encoding='utf-8') as f:
            try:
                instances = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}: not valid JSON ({err})') from err
        if not isinstance(instances, dict):
            raise ValueError(f'{path}: expected a COCO-style dict with "images" and '
                             f'"annotations", got {type(instances).__name__}')
        for key in ('images', 'annotations'):
            if not isinstance(instances.get(key), list):
                raise ValueError(f'{path}: missing the list {key!r} of a COCO-style '
                                 f'instances file')
        return instances

    def _index_instances(self, instances: dict) -> None:
        path = self.instances_file
        self.imgs: Dict[int, dict] = {}
        for index, img in enumerate(instances['images']):
            missing = [k for k in self.IMAGE_KEYS if not isinstance(img, dict) or k not in img]
            if missing:
                raise ValueError(f'{path}: images[{index}] lacks {missing}')
            self.imgs[img['id']] = img
        self.anns: Dict[int, dict] = {}
        for index, ann in enumerate(instances['annotations']):
            missing = [k for k in ('id', 'image_id', 'segmentation')
                       if not isinstance(ann, dict) or k not in ann]
            if missing:
                raise ValueError(f'{path}: annotations[{index}] lacks {missing}')
            self.anns[ann['id']] = ann
        self.cats: Dict[int, str] = {
            cat['id']: cat.get('name', str(cat['id']))
            for cat in instances.get('categories', []) or []
        }

    def _index_refs(self, refs: List[dict]) -> None:
        self.refs: Dict[int, dict] = {}
        for index, ref in enumerate(refs):
            missing = [k for k in self.REF_KEYS if k not in ref]
            if missing:
                raise ValueError(f'{self.refs_file}: refs[{index}] '
                                 f'(ref_id {ref.get("ref_id")!r}) lacks {missing}')
            ref_id = ref['ref_id']
            if not isinstance(ref['split'], str):
                raise ValueError(f'{self.refs_file}: ref_id {ref_id}: "split" must be a string, '
                                 f'got {ref["split"]!r}')
            if ref_id in self.refs:
                raise ValueError(f'{self.refs_file}: ref_id {ref_id} appears twice')
            image_id = ref['image_id']
            if image_id not in self.imgs:
                raise ValueError(f'{self.refs_file}: ref_id {ref_id} refers to image_id '
                                 f'{image_id}, which is not in {self.instances_file}')
            for ann_id in self._normalize_ann_ids(ref):
                ann = self.anns.get(ann_id)
                if ann is None:
                    raise ValueError(f'{self.refs_file}: ref_id {ref_id} refers to ann_id '
                                     f'{ann_id}, which is not in {self.instances_file}')
                if ann['image_id'] != image_id:
                    raise ValueError(f'{self.refs_file}: ref_id {ref_id} is on image_id '
                                     f'{image_id} but its ann_id {ann_id} is on image_id '
                                     f'{ann["image_id"]} ({self.instances_file})')
            if not isinstance(ref['sentences'], list):
                raise ValueError(f'{self.refs_file}: ref_id {ref_id}: "sentences" must be a '
                                 f'list, got {type(ref["sentences"]).__name__}')
            self.refs[ref_id] = ref

    # ------------------------------------------------------------------ queries
    @property
    def splits(self) -> List[str]:
        """list[str]: The distinct ``split`` values of the refs, sorted."""
        return sorted({ref['split'] for ref in self.refs.values()})

    def ref_ids(self, split: str) -> List[int]:
        """Ref ids of a split, in file order, with REFER's split rules.

        Args:
            split (str): ``train``, ``val``, ``test``, ``testA`` (includes ``testAB``,
                ``testAC``), ``testB``, ``testC``, ``testAB``, ``testBC``, ``testAC``.

        Returns:
            list[int]: The ref ids.

        Raises:
            ValueError: If the split matches no ref.
        """
        return select_ref_ids(self.refs.values(), split, self.refs_file)

    def image_ids(self, split: str) -> Set[int]:
        """Image ids of the refs in ``split``.

        Args:
            split (str): See :meth:`ref_ids`.

        Returns:
            set[int]: The image ids.
        """
        return {self.refs[ref_id]['image_id'] for ref_id in self.ref_ids(split)}

    @staticmethod
    def _normalize_ann_ids(ref: dict) -> List[int]:
        """``ann_id`` as a list, with gRefCOCO's ``-1`` (no target) removed."""
        ann_id = ref['ann_id']
        ann_ids = list(ann_id) if isinstance(ann_id, (list, tuple)) else [ann_id]
        return [a for a in ann_ids if a != -1]

    def ref_ann_ids(self, ref_id: int) -> List[int]:
        """Annotation ids of a ref's referent(s).

        Args:
            ref_id (int): The ref.

        Returns:
            list[int]: One id for REFER, several or none (no target) for gRefCOCO.
        """
        return self._normalize_ann_ids(self.refs[ref_id])

    def ref_category_id(self, ref_id: int) -> int:
        """Category of a ref's referent.

        Args:
            ref_id (int): The ref.

        Returns:
            int: The ref's ``category_id`` (the first valid one where gRefCOCO stores a
            list), else the first annotation's, else -1.
        """
        ref = self.refs[ref_id]
        cat = ref.get('category_id')
        cats = list(cat) if isinstance(cat, (list, tuple)) else [cat]
        cats = [c for c in cats if isinstance(c, int) and c >= 0]
        if cats:
            return cats[0]
        for ann_id in self.ref_ann_ids(ref_id):
            ann_cat = self.anns[ann_id].get('category_id')
            if isinstance(ann_cat, int):
                return ann_cat
        return -1

    def ref_sentences(self, ref_id: int, text_key: str = 'raw') -> List[dict]:
        """A ref's sentences in the dataset record format.

        Sentences whose text is empty or only whitespace are left out (gRefCOCO has a
        few; its reference loader skips them as well).

        Args:
            ref_id (int): The ref.
            text_key (str): Sentence field holding the text: ``'raw'`` (as typed by the
                annotator, LAVT's choice) or ``'sent'`` (REFER's cleaned, lower-case form).

        Returns:
            list[dict]: ``{'sent_id', 'text', 'exist', 'expr_type'}`` per sentence.
            ``exist`` is the sentence's R-RefCOCO flag (True when absent) and False for
            every sentence of a gRefCOCO no-target ref; ``expr_type`` is None when the
            annotation has none.

        Raises:
            ValueError: If a sentence has no ``sent_id``, lacks ``text_key`` or has a
                non-string text or a non-boolean ``exist``.
        """
        ref = self.refs[ref_id]
        has_target = bool(self.ref_ann_ids(ref_id))
        out = []
        for index, sent in enumerate(ref['sentences']):
            where = f'{self.refs_file}: ref_id {ref_id}, sentences[{index}]'
            if not isinstance(sent, dict) or 'sent_id' not in sent:
                raise ValueError(f'{where} has no "sent_id"')
            where += f' (sent_id {sent["sent_id"]})'
            if text_key not in sent:
                raise ValueError(f'{where} has no text: key {text_key!r} is missing '
                                 f'(keys: {sorted(sent)})')
            text = sent[text_key]
            if not isinstance(text, str):
                raise ValueError(f'{where}: {text_key!r} must be a string, got '
                                 f'{type(text).__name__}')
            if not text.strip():
                continue
            exist = sent.get('exist', True)
            # bool is a subclass of int; 0 / 1 appear in files written by other tools.
            if not isinstance(exist, int) or exist not in (0, 1):
                raise ValueError(f'{where}: "exist" must be a bool, got {exist!r}')
            expr_type = sent.get('expr_type')
            out.append(
                dict(sent_id=sent['sent_id'], text=text, exist=bool(exist) and has_target,
                     expr_type=expr_type))
        return out


__all__ = [
    'RestrictedUnpickler', 'ReferAnnotations', 'load_refs', 'save_refs_json', 'split_matches',
    'select_ref_ids', 'find_refs_file', 'default_image_dir', 'COCO_IMAGE_DIR'
]
