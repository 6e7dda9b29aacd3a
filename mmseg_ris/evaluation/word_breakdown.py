"""Break a test run's results down by the words its sentences use.

``tools/test.py CONFIG CKPT --out DIR`` leaves ``DIR/per_sentence.jsonl`` (one line per sentence with
``ref_id``, ``sent_id``, ``exist``, ``group``, ``I``, ``U``). Joined with the sentences' texts, the
records can be scored per word (every sentence that contains the word) and per combination of word kinds
(e.g. sentences naming a colour and a shape but no size), which shows *which* words a model has grounded:
an expression type such as "attribute" mixes words that are easy to match pixel by pixel (colours) with
words that need the whole object (shapes, sizes).

Scores follow :class:`~mmseg_ris.evaluation.RISMetric`: oIoU = sum I / sum U, mIoU = mean of I / U with a
sentence whose ground truth and prediction are both empty (U = 0) scoring 0; negatives (``exist`` False)
are left out.
"""
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ['words_of', 'breakdown_by_word', 'breakdown_by_word_kinds']

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words_of(text: str) -> List[str]:
    """Lower-case words of ``text`` (letters and digits; punctuation splits words)."""
    return _WORD.findall(text.lower())


def _score(rows: Sequence[dict]) -> Dict[str, float]:
    inter = sum(int(r['I']) for r in rows)
    union = sum(int(r['U']) for r in rows)
    ious = [int(r['I']) / int(r['U']) if int(r['U']) else 0.0 for r in rows]
    return dict(sentences=len(rows),
                oIoU=100.0 * inter / union if union else 0.0,
                mIoU=100.0 * sum(ious) / len(ious) if ious else 0.0)


def _scored(records: Sequence[dict], texts: Mapping[Tuple, str],
            group: Optional[str]) -> List[Tuple[dict, List[str]]]:
    """The records to score, each with the words of its sentence."""
    out = []
    for rec in records:
        if rec.get('exist', True) is False:
            continue
        if group is not None and rec.get('group') != group:
            continue
        key = (rec['ref_id'], rec['sent_id'])
        if key not in texts:
            raise KeyError(f'ref_id={key[0]}, sent_id={key[1]} has no sentence text: the texts are '
                           'not those of the test run (config or split differ)')
        out.append((rec, words_of(texts[key])))
    if not out:
        raise ValueError(f'no scored sentence{"" if group is None else f" in group {group!r}"}')
    return out


def breakdown_by_word(records: Sequence[dict],
                      texts: Mapping[Tuple, str],
                      min_count: int = 10,
                      group: Optional[str] = None) -> List[dict]:
    """Score the sentences that contain each word.

    Args:
        records (Sequence[dict]): Per-sentence records (``ref_id``, ``sent_id``, ``I``, ``U``, ...).
        texts (Mapping[tuple, str]): ``{(ref_id, sent_id): sentence}``.
        min_count (int): Leave out words in fewer sentences than this.
        group (str, optional): Only records of this group (e.g. ``'attribute'``).

    Returns:
        list[dict]: ``word``, ``sentences``, ``oIoU``, ``mIoU`` per word, lowest oIoU first (ties by
        word).

    Raises:
        KeyError: If a record's sentence is not in ``texts``.
        ValueError: If nothing is left to score or ``min_count`` < 1.
    """
    if min_count < 1:
        raise ValueError(f'min_count must be >= 1, got {min_count}')
    by_word: Dict[str, List[dict]] = {}
    for rec, words in _scored(records, texts, group):
        for word in set(words):
            by_word.setdefault(word, []).append(rec)
    rows = [dict(word=w, **_score(rs)) for w, rs in by_word.items() if len(rs) >= min_count]
    return sorted(rows, key=lambda r: (r['oIoU'], r['word']))


def breakdown_by_word_kinds(records: Sequence[dict],
                            texts: Mapping[Tuple, str],
                            word_kinds: Mapping[str, Sequence[str]],
                            group: Optional[str] = None) -> List[dict]:
    """Score the sentences by which kinds of word they use.

    Each sentence is keyed by the kinds (in ``word_kinds`` order) of which it contains at least one
    word, e.g. ``'colour+shape'``; ``'(none)'`` if it uses none.

    Args:
        records (Sequence[dict]): Per-sentence records.
        texts (Mapping[tuple, str]): ``{(ref_id, sent_id): sentence}``.
        word_kinds (Mapping[str, Sequence[str]]): Kind name -> its words, e.g.
            ``mmseg_ris.datasets.synthetic.ATTRIBUTE_WORDS``.
        group (str, optional): Only records of this group.

    Returns:
        list[dict]: ``kinds``, ``sentences``, ``oIoU``, ``mIoU`` per combination, in the order of
        ``word_kinds`` (fewer kinds first).

    Raises:
        KeyError: If a record's sentence is not in ``texts``.
        ValueError: If ``word_kinds`` is empty or a kind has no words, or nothing is left to score.
    """
    if not word_kinds or any(not list(ws) for ws in word_kinds.values()):
        raise ValueError(f'word_kinds must name at least one kind, each with words, got '
                         f'{dict(word_kinds)}')
    names = list(word_kinds)
    vocab = {name: {w.lower() for w in ws} for name, ws in word_kinds.items()}
    by_key: Dict[Tuple[int, ...], List[dict]] = {}
    for rec, words in _scored(records, texts, group):
        present = set(words)
        key = tuple(i for i, name in enumerate(names) if present & vocab[name])
        by_key.setdefault(key, []).append(rec)
    rows = []
    for key in sorted(by_key, key=lambda k: (len(k), k)):
        label = '+'.join(names[i] for i in key) or '(none)'
        rows.append(dict(kinds=label, **_score(by_key[key])))
    return rows
