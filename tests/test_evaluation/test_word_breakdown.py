"""Per-word and per-word-kind scores of per-sentence results, against hand-computed values."""
import pytest

from mmseg_ris.datasets.synthetic import ATTRIBUTE_WORDS, COLORS, SHAPES
from mmseg_ris.evaluation.word_breakdown import (breakdown_by_word, breakdown_by_word_kinds,
                                                 words_of)

KINDS = dict(colour=['red', 'blue'], shape=['star', 'circle'])


def _rec(ref, i, u, group='attribute', exist=True):
    return dict(ref_id=ref, sent_id=ref * 10, exist=exist, group=group, I=i, U=u)


RECORDS = [
    _rec(1, 30, 40),                    # "the red star"       colour+shape
    _rec(2, 10, 40),                    # "the blue circle"    colour+shape
    _rec(3, 45, 50),                    # "the red one"        colour
    _rec(4, 0, 20),                     # "the star"           shape
    _rec(5, 0, 0),                      # "Star, left!"        shape, empty truth and prediction
    _rec(6, 5, 25, group='relational'),  # "the circle left of the star"
    _rec(7, 0, 90, exist=False),        # a negative: never scored
    _rec(8, 8, 10),                     # "the object"         (none)
]
TEXTS = {(1, 10): 'the red star', (2, 20): 'the blue circle', (3, 30): 'the red one',
         (4, 40): 'the star', (5, 50): 'Star, left!', (6, 60): 'the circle left of the star',
         (7, 70): 'the green square', (8, 80): 'the object'}


def test_words_of():
    assert words_of("The RED star, left-of the 2nd one's") == [
        'the', 'red', 'star', 'left', 'of', 'the', '2nd', "one's"]


def test_by_word_kinds_hand_computed():
    rows = breakdown_by_word_kinds(RECORDS, TEXTS, KINDS)
    assert [r['kinds'] for r in rows] == ['(none)', 'colour', 'shape', 'colour+shape']
    by = {r['kinds']: r for r in rows}
    assert by['(none)'] == dict(kinds='(none)', sentences=1, oIoU=80.0, mIoU=80.0)
    assert by['colour'] == dict(kinds='colour', sentences=1, oIoU=90.0, mIoU=90.0)
    # refs 4, 5, 6: I 0 + 0 + 5 over U 20 + 0 + 25; the U = 0 sentence counts 0 in mIoU
    assert by['shape']['sentences'] == 3
    assert by['shape']['oIoU'] == pytest.approx(100 * 5 / 45)
    assert by['shape']['mIoU'] == pytest.approx(100 * (0 + 0 + 0.2) / 3)
    # refs 1, 2: 40 / 80; (0.75 + 0.25) / 2
    assert by['colour+shape']['oIoU'] == pytest.approx(50.0)
    assert by['colour+shape']['mIoU'] == pytest.approx(50.0)
    only = breakdown_by_word_kinds(RECORDS, TEXTS, KINDS, group='relational')
    assert only == [dict(kinds='shape', sentences=1, oIoU=20.0, mIoU=20.0)]


def test_by_word_hand_computed():
    rows = breakdown_by_word(RECORDS, TEXTS, min_count=2, group='attribute')
    by = {r['word']: r for r in rows}
    # 'the' in refs 1, 2, 3, 4, 8 (counted once per sentence); 'star' in 1, 4, 5; 'red' in 1, 3
    assert set(by) == {'the', 'star', 'red'}
    assert by['the']['sentences'] == 5
    assert by['the']['oIoU'] == pytest.approx(100 * (30 + 10 + 45 + 0 + 8) / (40 + 40 + 50 + 20 + 10))
    assert by['star']['oIoU'] == pytest.approx(100 * 30 / 60)
    assert by['star']['mIoU'] == pytest.approx(100 * 0.75 / 3)
    assert by['red']['oIoU'] == pytest.approx(100 * 75 / 90)
    assert [r['word'] for r in rows] == ['star', 'the', 'red']  # lowest oIoU first


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match='ref_id=8, sent_id=80'):
        breakdown_by_word(RECORDS, {k: v for k, v in TEXTS.items() if k[0] != 8})
    with pytest.raises(ValueError, match="group 'superlative'"):
        breakdown_by_word(RECORDS, TEXTS, group='superlative')
    with pytest.raises(ValueError, match='min_count'):
        breakdown_by_word(RECORDS, TEXTS, min_count=0)
    with pytest.raises(ValueError, match='word_kinds'):
        breakdown_by_word_kinds(RECORDS, TEXTS, {})
    with pytest.raises(ValueError, match='word_kinds'):
        breakdown_by_word_kinds(RECORDS, TEXTS, dict(colour=[]))


def test_synthetic_attribute_words():
    assert ATTRIBUTE_WORDS['colour'] == tuple(COLORS)
    assert ATTRIBUTE_WORDS['shape'] == SHAPES
    assert set(ATTRIBUTE_WORDS['size']) == {'small', 'little', 'big', 'large'}
