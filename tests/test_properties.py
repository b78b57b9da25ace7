"""Property-based tests (hypothesis) of the file-name parser and the array validators.

Each property states what must hold for *every* input, so hypothesis can look for the name or
array that breaks it: names round-trip, anything off the pattern is refused with a ValueError
(never another exception), the image listing reports exactly the missing and repeated indices,
and the validators agree with a direct computation on arbitrary arrays.
"""

import re
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nsdflow.data.layout import (
    IMAGE_RE,
    N_NSD_IMAGES,
    SubjectPaths,
    format_image_name,
    parse_image_name,
    subject_name,
)
from nsdflow.data.read import DataError, list_images
from nsdflow.data.validate import _nonfinite_columns
from nsdflow.evaluate.scoring import (
    noise_ceiling_fraction,
    noise_normalized_score,
    pearson_columns,
)
from nsdflow.features.images import lookup_rows

splits = st.sampled_from(["train", "test"])
indices = st.integers(1, 9999)
nsd_ids = st.integers(0, N_NSD_IMAGES - 1)


# ----------------------------------------------------------------------------- file names


@given(splits, indices, nsd_ids)
def test_image_names_round_trip(split, index, nsd_id):
    name = format_image_name(split, index, nsd_id)
    assert re.fullmatch(r"(train|test)-\d{4}_nsd-\d{5}\.png", name)
    parsed = parse_image_name(name)
    assert (parsed.split, parsed.index, parsed.nsd_id) == (split, index, nsd_id)
    assert parsed.filename == name


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=30))
def test_any_other_name_is_refused_with_a_value_error(name):
    if IMAGE_RE.match(name):
        parsed = parse_image_name(name) if int(name[-9:-4]) < N_NSD_IMAGES and int(name.split("-")[1][:4]) else None
        assume(parsed is None)
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        parse_image_name(name)


@given(splits, indices, nsd_ids, st.sampled_from(["{}.PNG", "{}.jpg", " {}", "{} ", "x{}", "{}.png"]))
def test_near_misses_are_refused(split, index, nsd_id, template):
    name = template.format(format_image_name(split, index, nsd_id).removesuffix(".png"))
    if name.endswith(".png") and not name.startswith(("x", " ")):
        return  # the template that rebuilds a valid name
    with pytest.raises(ValueError):
        parse_image_name(name)


@given(st.one_of(st.integers(1, 99), st.integers(1, 99).map(str), st.integers(1, 99).map(lambda i: f"subj{i:02d}")))
def test_subject_names_normalise(subject):
    name = subject_name(subject)
    assert re.fullmatch(r"subj\d{2}", name)
    assert subject_name(name) == name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 40), min_size=1, max_size=25))
def test_listing_reports_exactly_the_missing_and_repeated_indices(tmp_path_factory, index_list):
    root = tmp_path_factory.mktemp("root")
    folder = SubjectPaths(root, 1).images_dir("train")
    folder.mkdir(parents=True)
    for k, index in enumerate(index_list):
        (folder / format_image_name("train", index, 100 + k)).touch()  # unique NSD ids
    present = set(index_list)
    missing = sorted(set(range(1, max(index_list) + 1)) - present)
    repeated = sorted(i for i in present if index_list.count(i) > 1)
    if not missing and not repeated:
        assert [n.index for n in list_images(root, 1, "train")] == sorted(index_list)
        return
    with pytest.raises(DataError) as info:
        list_images(root, 1, "train")
    msg = str(info.value)
    if missing:
        assert f"image index missing (indices must run 1..N): {missing[0]}" in msg
    else:
        assert "image index missing" not in msg
    if repeated:
        assert f"image index repeated: {repeated[0]}" in msg
    else:
        assert "image index repeated" not in msg


# ----------------------------------------------------------------------------- arrays

finite_or_not = st.one_of(st.floats(-1e6, 1e6, width=32), st.just(np.nan), st.just(np.inf), st.just(-np.inf))


@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 12)), elements=finite_or_not),
       st.integers(1, 16))
def test_nonfinite_columns_match_a_direct_scan(arr, block_rows):
    expected = np.flatnonzero(~np.isfinite(arr).all(axis=0))
    assert np.array_equal(_nonfinite_columns(arr, block_rows=block_rows), expected)


@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(0, 1)))
def test_fractions_stay_fractions(nc):
    out, unit = noise_ceiling_fraction(nc)
    assert unit == "fraction" and np.array_equal(out, nc)


@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(0, 100)))
def test_percent_is_detected_when_a_value_exceeds_one(nc):
    assume(nc.max() > 1)
    out, unit = noise_ceiling_fraction(nc)
    assert unit == "percent" and np.allclose(out, nc / 100)


@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(-1, 1)),
       arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 1)))
def test_score_is_bounded_and_matches_the_formula(r, nc):
    n = min(len(r), len(nc))
    r, nc = r[:n], nc[:n]
    score = noise_normalized_score(r, nc)
    assert ((0 <= score) & (score <= 100)).all()
    nc_safe = np.where(nc == 0, 1e-14, nc)
    with np.errstate(over="ignore"):
        assert np.allclose(score, np.minimum(100 * np.maximum(r, 0) ** 2 / nc_safe, 100))


@settings(deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(3, 30), st.integers(1, 6)), elements=st.floats(-100, 100)),
       arrays(np.float64, st.tuples(st.integers(3, 30), st.integers(1, 6)), elements=st.floats(-100, 100)))
def test_pearson_is_in_range_or_nan_for_constant_columns(a, b):
    n, v = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:n, :v], b[:n, :v]
    r = pearson_columns(a, b)
    constant = (np.ptp(a, axis=0) == 0) | (np.ptp(b, axis=0) == 0)
    assert np.isnan(r[constant]).all()
    assert ((r[~constant] >= -1) & (r[~constant] <= 1)).all()


@given(st.lists(st.integers(0, 500), min_size=1, max_size=50, unique=True), st.data())
def test_lookup_rows_finds_ids_and_names_missing_ones(ids, data):
    sorted_ids = np.array(sorted(ids))
    wanted = data.draw(st.lists(st.sampled_from(ids), max_size=20))
    assert np.array_equal(sorted_ids[lookup_rows(sorted_ids, wanted)], np.array(wanted, dtype=np.int64))
    absent = data.draw(st.integers(501, 900))
    with pytest.raises(KeyError, match=str(absent)):
        lookup_rows(sorted_ids, [*wanted, absent])
