"""Exactness of the Hamming-ranking metrics against brute-force references."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lthash.errors import LthashError
from lthash.evaluate import _ap_kernels
from lthash.evaluate.codes import pack_codes
from lthash.evaluate.metrics import (
    class_groups,
    group_map,
    mean_average_precision,
    per_class_ap,
    precision_at_k_curve,
    precision_within_radius,
    query_groups,
    radius_precision_recall,
    score_codes,
)


def hamming(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    return ((np.asarray(q)[None, :] > 0) != (np.asarray(db) > 0)).sum(axis=1)


def relevance(ql: np.ndarray, dl: np.ndarray) -> np.ndarray:
    if np.ndim(dl) == 1:
        return (dl == ql).astype(int)
    return ((dl @ ql) > 0).astype(int)


def ap_of_sequence(rel: np.ndarray) -> float:
    """AP of a ranked relevance sequence: mean of P@k over relevant positions, 0 if none."""
    rel = np.asarray(rel, dtype=float)
    if rel.sum() == 0:
        return 0.0
    return float((np.cumsum(rel) / np.arange(1, rel.size + 1) * rel).sum() / rel.sum())


def reference_index_ap(qc, dc, ql, dl, topk=None) -> np.ndarray:
    """The straightforward reference: stable argsort of distances, cut at topk."""
    out = []
    for i in range(len(qc)):
        order = np.argsort(hamming(qc[i], dc), kind="stable")[: topk or len(dc)]
        out.append(ap_of_sequence(relevance(ql[i], dl)[order]))
    return np.array(out)


def exact_ap(seq) -> Fraction:
    """AP of one ranked 0/1 relevance sequence, as an exact fraction (0 with no relevant item)."""
    hits, acc = 0, Fraction(0)
    for pos, x in enumerate(seq, start=1):
        if x:
            hits += 1
            acc += Fraction(hits, pos)
    return acc / hits if hits else Fraction(0)


def enumerate_average_ap(dist: np.ndarray, rel: np.ndarray, topk: int) -> Fraction:
    """Exact E[AP@topk] by enumerating every relevance pattern inside every tie (equally likely)."""
    patterns = []
    for d in np.unique(dist):
        bucket = rel[dist == d]
        n, r = bucket.size, int(bucket.sum())
        patterns.append([tuple(int(j in chosen) for j in range(n)) for chosen in itertools.combinations(range(n), r)])
    total, count = Fraction(0), 0
    for combo in itertools.product(*patterns):
        seq = [x for pattern in combo for x in pattern][:topk]
        total += exact_ap(seq)
        count += 1
    return total / count


def permutation_average_ap(dist: np.ndarray, rel: np.ndarray, topk: int) -> Fraction:
    """Exact E[AP@topk] over all orderings of the items inside each tie (full permutations)."""
    buckets = [np.flatnonzero(dist == d) for d in np.unique(dist)]
    total, count = Fraction(0), 0
    for combo in itertools.product(*(itertools.permutations(b) for b in buckets)):
        seq = rel[np.concatenate(combo)][:topk]
        total += exact_ap(seq)
        count += 1
    return total / count


def position_average_ap(dist: np.ndarray, rel: np.ndarray, topk: int) -> Fraction:
    """Exact E[AP@topk] from the law of the position of the j-th relevant item in a bucket:
    P(P_j = p) = C(p-1, j-1) C(n-p, r-j) / C(n, r); the bucket cut by topk is conditioned on
    the hypergeometric number x of relevant items in its first m places."""

    def bucket_sum(before: int, n: int, r: int, rel_before: int) -> Fraction:
        return sum((Fraction(rel_before + j, before + p) * comb(p - 1, j - 1) * comb(n - p, r - j)
                    for j in range(1, r + 1) for p in range(j, n - r + j + 1)), Fraction(0)) / comb(n, r)

    before = rel_before = 0
    acc = Fraction(0)
    for d in np.unique(dist):
        n = int((dist == d).sum())
        r = int(rel[dist == d].sum())
        if before >= topk:
            break
        if before + n <= topk:
            acc += bucket_sum(before, n, r, rel_before) if r else 0
            before, rel_before = before + n, rel_before + r
            continue
        m = topk - before
        expected = Fraction(0)
        for x in range(max(0, m - (n - r)), min(r, m) + 1):
            weight = Fraction(comb(r, x) * comb(n - r, m - x), comb(n, m))
            if rel_before + x:
                inner = bucket_sum(before, m, x, rel_before) if x else 0
                expected += weight * (acc + inner) / (rel_before + x)
        return expected
    return acc / rel_before if rel_before else Fraction(0)


def random_problem(rng: np.random.Generator, n_db: int, n_query: int, bits: int, classes: int):
    dc = rng.choice([-1, 1], (n_db, bits))
    qc = rng.choice([-1, 1], (n_query, bits))
    return qc, dc, rng.integers(0, classes, n_query), rng.integers(0, classes, n_db)


def test_index_order_matches_stable_argsort():
    rng = np.random.default_rng(0)
    for bits in (3, 8, 33, 64, 100, 130):
        qc, dc, ql, dl = random_problem(rng, 700, 15, bits, 5)
        for topk in (None, 1, 50, 699, 700, 5000):
            scores = score_codes(qc, dc, ql, dl, [topk], chunk=128)
            ref = reference_index_ap(qc, dc, ql, dl, topk)
            np.testing.assert_allclose(scores.ap(topk, "index"), ref, rtol=0, atol=1e-12)


def test_query_groups_cover_every_query_once_and_keep_classes_together():
    labels = np.array([2, 0, 2, 2, 1, 2, 0, 2, 7, 2, 0, 0, 0])
    rows = query_groups(labels, size=4)
    filled = rows[rows >= 0]
    assert sorted(filled.tolist()) == list(range(labels.size))
    # class 2 has six queries and class 0 five: one whole row each, the rest share rows
    whole = [row for row in rows if (row >= 0).all() and len(set(labels[row])) == 1]
    assert sorted(labels[row[0]] for row in whole) == [0, 2]
    assert rows.shape[0] == 4


def test_skewed_query_classes_and_classes_missing_from_the_database():
    """Rows mixing classes, a class with no database items, and events on chunk edges."""
    rng = np.random.default_rng(7)
    for bits in (16, 64, 128, 192):
        dc = rng.choice([-1, 1], (300, bits))
        dl = rng.integers(0, 3, 300)
        ql = np.r_[np.zeros(9, int), [1, 2, 3, 3, 4]]
        qc = rng.choice([-1, 1], (ql.size, bits))
        for chunk in (1, 5, 4096):
            scores = score_codes(qc, dc, ql, dl, [None, 17], chunk=chunk)
            for topk in (None, 17):
                np.testing.assert_allclose(scores.ap(topk, "index"), reference_index_ap(qc, dc, ql, dl, topk),
                                           rtol=0, atol=1e-12)
            absent = ql >= 3
            assert (scores.ap(None, "index")[absent] == 0).all() and (scores.hits[absent] == 0).all()
            assert (scores.hist_all.sum(axis=1) == 300).all()
            np.testing.assert_array_equal(scores.hist_rel.sum(axis=1), np.bincount(dl, minlength=5)[ql])


def assert_average_ap_is(reference, qc, dc, ql, dl, topks, n):
    """The kernel's tie-averaged AP of both queries at every cut-off equals ``reference``'s."""
    scores = score_codes(qc, dc, ql, dl, topks)
    for topk in topks:
        for i in range(2):
            exact = reference(hamming(qc[i], dc), relevance(ql[i], dl), topk or n)
            assert abs(scores.ap(topk, "average")[i] - float(exact)) < 1e-12


def test_tie_average_matches_permutation_enumeration():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 8))
        qc, dc, ql, dl = random_problem(rng, n, 2, int(rng.integers(1, 3)), 2)
        topks = [None, int(rng.integers(1, n + 1))]
        assert_average_ap_is(permutation_average_ap, qc, dc, ql, dl, topks, n)


def test_tie_average_matches_pattern_enumeration_heavy_ties():
    rng = np.random.default_rng(2)
    for _ in range(60):
        n = int(rng.integers(2, 16))
        qc, dc, ql, dl = random_problem(rng, n, 2, int(rng.integers(1, 4)), 3)
        topks = [None] + sorted({int(k) for k in rng.integers(1, n + 1, 3)})
        assert_average_ap_is(enumerate_average_ap, qc, dc, ql, dl, topks, n)


@pytest.mark.parametrize("n_db,bits,topks", [(300, 2, [None, 1, 70, 150, 151, 233]),
                                             (200, 1, [None, 7, 99, 100, 101, 160])])
def test_tie_average_large_buckets_exact(n_db, bits, topks):
    """Buckets of hundreds of items (harmonic numbers by their asymptotic series) and
    cut-offs inside them, against the exact rational position-law reference."""
    rng = np.random.default_rng(n_db)
    qc, dc, ql, dl = random_problem(rng, n_db, 2, bits, 4)
    assert_average_ap_is(position_average_ap, qc, dc, ql, dl, topks, n_db)


def test_hand_made_single_tie():
    """All codes equal: one bucket of n items, r relevant. E[AP] over random orders equals
    the enumeration; index order puts relevant items where the database has them."""
    dc = np.ones((6, 4))
    qc = np.ones((1, 4))
    dl = np.array([0, 1, 1, 0, 1, 0])
    ql = np.array([1])
    assert mean_average_precision(qc, dc, ql, dl) == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3, abs=1e-15)
    exact = enumerate_average_ap(np.zeros(6, int), relevance(1, dl), 6)
    assert mean_average_precision(qc, dc, ql, dl, ties="average") == pytest.approx(float(exact), abs=1e-15)
    exact3 = enumerate_average_ap(np.zeros(6, int), relevance(1, dl), 3)
    assert mean_average_precision(qc, dc, ql, dl, topk=3, ties="average") == pytest.approx(float(exact3), abs=1e-15)
    assert mean_average_precision(qc, dc, ql, dl, topk=1) == 0.0


def test_query_without_relevant_items_contributes_zero():
    dc = np.array([[1, 1], [1, -1], [-1, -1]])
    qc = np.array([[1, 1], [1, 1]])
    scores = score_codes(qc, dc, np.array([7, 0]), np.array([0, 0, 1]), [None, 1])
    assert scores.ap(None)[0] == 0.0 and scores.ap(None, "average")[0] == 0.0
    assert scores.map(None) == pytest.approx(0.5)
    assert scores.hits[0].tolist() == [0, 0]


def test_multilabel_matches_reference():
    rng = np.random.default_rng(3)
    qc, dc, _, _ = random_problem(rng, 400, 12, 16, 1)
    ql = (rng.random((12, 70)) < 0.04).astype(np.int64)
    dl = (rng.random((400, 70)) < 0.04).astype(np.int64)
    ql[0] = 0
    for topk in (None, 30):
        scores = score_codes(qc, dc, ql, dl, [topk])
        np.testing.assert_allclose(scores.ap(topk), reference_index_ap(qc, dc, ql, dl, topk), atol=1e-12)
    small_q, small_db = random_problem(rng, 9, 3, 2, 1)[:2]
    sl_q = (rng.random((3, 5)) < 0.5).astype(int)
    sl_db = (rng.random((9, 5)) < 0.5).astype(int)
    scores = score_codes(small_q, small_db, sl_q, sl_db, [None, 4])
    for i in range(3):
        rel = relevance(sl_q[i], sl_db)
        for topk in (None, 4):
            exact = enumerate_average_ap(hamming(small_q[i], small_db), rel, topk or 9)
            assert abs(scores.ap(topk, "average")[i] - float(exact)) < 1e-12


@pytest.mark.parametrize("bits,n_labels,chunk", [(64, 20, 4096), (128, 100, 7), (130, 20, 64), (16, 150, 4096)])
def test_multilabel_grouped_scan_every_width(bits, n_labels, chunk):
    """Codes of 1, 2 and 3 words and label masks of 1, 2 and 3 words (the register path and
    the general one), a query count that leaves empty slots in the last group of four."""
    rng = np.random.default_rng(bits + n_labels)
    qc, dc, _, _ = random_problem(rng, 300, 11, bits, 1)
    ql = (rng.random((11, n_labels)) < 3 / n_labels).astype(np.float32)
    dl = (rng.random((300, n_labels)) < 3 / n_labels).astype(np.float32)
    ql[0] = 0
    ql[1, -1] = dl[:5, -1] = 1
    scores = score_codes(qc, dc, ql, dl, [None, 25], chunk=chunk)
    for topk in (None, 25):
        np.testing.assert_allclose(scores.ap(topk), reference_index_ap(qc, dc, ql, dl, topk), atol=1e-12)
    perm = rng.permutation(300)
    shuffled = score_codes(qc, dc[perm], ql, dl[perm], [None, 25], chunk=chunk)
    np.testing.assert_allclose(shuffled.ap_average, scores.ap_average, atol=1e-12)
    assert scores.hist_rel.sum(axis=1).tolist() == [int(((dl @ q) > 0).sum()) for q in ql]


def test_unpacked_codes_pack_like_pack_codes():
    from lthash.evaluate.codes import as_words
    from lthash.evaluate.metrics import pack_words

    rng = np.random.default_rng(8)
    for bits in (1, 7, 8, 63, 64, 65, 130):
        signs = rng.choice([-1, 1], (9, bits))
        expected = as_words(pack_codes(signs))
        for codes in (signs.astype(np.float32), signs.astype(np.int8), signs > 0, (signs > 0).astype(np.float64),
                      signs.astype(">i4"), signs.astype(np.float16), np.asfortranarray(signs)):
            np.testing.assert_array_equal(pack_words(codes), expected)


@pytest.mark.parametrize("bad", [np.nan, 0.5, 2.0, -3.0])
def test_unpacked_codes_refuse_other_values(bad):
    codes = np.ones((4, 10), np.float32)
    codes[2, 9] = bad
    with pytest.raises(LthashError, match=r"\{-1,\+1\} or \{0,1\}"):
        mean_average_precision(codes, np.ones((3, 10)), np.zeros(4, int), np.zeros(3, int))


def test_unpacked_codes_refuse_signed_and_binary_mixed():
    codes = np.ones((4, 10))
    codes[0, 0], codes[3, 1] = -1, 0
    with pytest.raises(LthashError, match="found \\[-1.0, 0.0, 1.0\\]"):
        mean_average_precision(codes, np.ones((3, 10)), np.zeros(4, int), np.zeros(3, int))


def test_one_hot_rows_take_the_class_path_only_when_single():
    from lthash.evaluate.metrics import prepare_labels

    eye = np.eye(5, dtype=np.float32)
    q, db = prepare_labels(eye[[0, 4]], eye[[1, 2, 4]], 2, 3)
    assert not q.multilabel and q.classes.tolist() == [0, 4] and db.classes.tolist() == [1, 2, 4]
    two = eye[[1, 2, 4]].copy()
    two[0, 3] = 1
    assert prepare_labels(eye[[0, 4]], two, 2, 3)[0].multilabel
    with pytest.raises(LthashError, match="db_labels: one-hot rows must hold 0/1 values"):
        prepare_labels(eye[[0, 4]], two * 0.5, 2, 3)


def test_one_hot_single_label_equals_indices():
    rng = np.random.default_rng(4)
    qc, dc, ql, dl = random_problem(rng, 300, 10, 12, 6)
    eye = np.eye(6, dtype=np.int64)
    for ties in ("index", "average"):
        assert mean_average_precision(qc, dc, eye[ql], eye[dl], ties=ties) == pytest.approx(
            mean_average_precision(qc, dc, ql, dl, ties=ties), abs=1e-15)


def test_packed_signed_and_binary_inputs_agree():
    rng = np.random.default_rng(5)
    for bits in (5, 48, 64, 77):
        qc, dc, ql, dl = random_problem(rng, 250, 8, bits, 4)
        signed = mean_average_precision(qc, dc, ql, dl, topk=40, ties="average")
        binary = mean_average_precision((qc > 0).astype(np.float32), (dc > 0).astype(np.uint8), ql, dl,
                                        topk=40, ties="average")
        packed = mean_average_precision(pack_codes(qc), pack_codes(dc), ql, dl, topk=40, ties="average", bits=bits)
        assert signed == binary == packed


def test_packed_padding_bits_are_ignored():
    rng = np.random.default_rng(6)
    qc, dc, ql, dl = random_problem(rng, 100, 5, 13, 3)
    packed_db = pack_codes(dc)
    dirty = packed_db.copy()
    dirty[:, -1] |= rng.integers(0, 8, len(dirty)).astype(np.uint8)
    assert mean_average_precision(pack_codes(qc), dirty, ql, dl, bits=13) == \
        mean_average_precision(pack_codes(qc), packed_db, ql, dl, bits=13)


def test_harmonic_diff_accuracy():
    for start, count in [(0, 1), (0, 1000), (5, 70), (63, 65), (10**6, 10**5), (10**7, 3), (1, 10**6)]:
        exact = sum(1.0 / p for p in range(start + count, start, -1))
        assert abs(_ap_kernels.harmonic_diff(start, count) - exact) <= 1e-14 * exact


def test_curves_against_simple_references():
    rng = np.random.default_rng(7)
    qc, dc, ql, dl = random_problem(rng, 200, 6, 6, 3)
    scores = score_codes(qc, dc, ql, dl)
    ks = [1, 5, 17, 100, 200]
    expected_pk = np.zeros(len(ks))
    radius_p = np.zeros((6, 7))
    radius_r = np.zeros((6, 7))
    for i in range(6):
        dist = hamming(qc[i], dc)
        rel = relevance(ql[i], dl)
        for t, k in enumerate(ks):
            kth = np.sort(dist)[k - 1]
            above = (dist < kth).sum()
            tie = dist == kth
            expected_pk[t] += (rel[dist < kth].sum() + (k - above) * rel[tie].mean()) / k
        for radius in range(7):
            within = dist <= radius
            radius_p[i, radius] = rel[within].mean() if within.any() else 0.0
            radius_r[i, radius] = rel[within].sum() / rel.sum()
    np.testing.assert_allclose(precision_at_k_curve(scores, ks), expected_pk / 6, atol=1e-12)
    precision, recall, _ = radius_precision_recall(scores)
    np.testing.assert_allclose(precision, radius_p.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(recall, radius_r.mean(axis=0), atol=1e-12)
    assert precision_within_radius(scores, 2) == pytest.approx(radius_p[:, 2].mean(), abs=1e-12)


def test_per_class_and_group_breakdown():
    ap = np.array([0.1, 0.3, 0.5, 0.9, 0.7])
    labels = np.array([0, 0, 1, 2, 2])
    per_class, n = per_class_ap(ap, labels, 4)
    np.testing.assert_allclose(per_class[:3], [0.2, 0.5, 0.8])
    assert np.isnan(per_class[3]) and n.tolist() == [2, 1, 2, 0]
    groups = class_groups([500, 100, 19, 20], many_shot=100, few_shot=20)
    assert groups == ["head", "medium", "tail", "medium"]
    assert group_map(ap, labels, groups) == pytest.approx({"head": 0.2, "medium": 0.5, "tail": 0.8})
    multi = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]])
    assert group_map(ap, multi, groups) == pytest.approx({"head": 0.4, "medium": 0.4, "tail": 0.6})


@pytest.mark.parametrize("kwargs,match", [
    ({"query_codes": np.ones((2, 8)), "db_codes": np.ones((3, 9))}, "8 bits but database codes have 9"),
    ({"query_codes": np.full((2, 8), 0.5)}, r"\{-1,\+1\} or \{0,1\}"),
    ({"query_labels": np.array([0, 1, 2])}, "query_labels has 3 rows but there are 2 codes"),
    ({"db_labels": np.zeros((3, 2, 2), int)}, "db_labels must be class indices"),
    ({"query_labels": np.eye(2, dtype=int)}, "same form"),
    ({"query_codes": np.zeros((2, 2), np.uint8), "db_codes": np.zeros((3, 2), np.uint8), "bits": 8},
     "2 bytes per item, but 8 bits need 1"),
    ({"query_codes": np.zeros((2, 8)), "bits": 8}, "must be uint8"),
    ({"db_codes": np.ones((0, 8))}, "empty"),
    ({"topk": 0}, "topk must be a positive integer"),
    ({"ties": "random"}, "ties must be one of"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = {"query_codes": np.ones((2, 8)), "db_codes": -np.ones((3, 8)),
            "query_labels": np.array([0, 1]), "db_labels": np.array([0, 1, 1])}
    args.update(kwargs)
    with pytest.raises(LthashError, match=match):
        mean_average_precision(**args)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_random_valid_inputs(data):
    n_db = data.draw(st.integers(1, 60))
    n_query = data.draw(st.integers(1, 12))
    bits = data.draw(st.integers(1, 200))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    qc, dc, ql, dl = random_problem(rng, n_db, n_query, bits, data.draw(st.integers(1, 5)))
    topk = data.draw(st.one_of(st.none(), st.integers(1, n_db + 3)))
    scores = score_codes(qc, dc, ql, dl, [topk], chunk=data.draw(st.sampled_from([1, 7, 4096])))
    index_ap = scores.ap(topk, "index")
    average_ap = scores.ap(topk, "average")
    np.testing.assert_allclose(index_ap, reference_index_ap(qc, dc, ql, dl, topk), atol=1e-12)
    assert ((average_ap >= -1e-15) & (average_ap <= 1 + 1e-12)).all()
    perm = rng.permutation(n_db)
    shuffled = score_codes(qc, dc[perm], ql, dl[perm], [topk])
    np.testing.assert_allclose(shuffled.ap(topk, "average"), average_ap, atol=1e-12)
    no_ties = np.flatnonzero(np.array([len(np.unique(hamming(q, dc))) == n_db for q in qc]))
    np.testing.assert_allclose(average_ap[no_ties], index_ap[no_ties], atol=1e-12)
