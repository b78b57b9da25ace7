import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsdflow.data.layout import (
    REAL_COUNTS,
    ROI_CLASSES,
    format_image_name,
    parse_image_name,
    subject_name,
)


def test_parse_known_name():
    name = parse_image_name("train-0001_nsd-00012.png")
    assert (name.split, name.index, name.nsd_id) == ("train", 1, 12)
    assert name.filename == "train-0001_nsd-00012.png"


@given(st.sampled_from(["train", "test"]), st.integers(1, 9999), st.integers(0, 72_999))
def test_format_parse_roundtrip(split, index, nsd_id):
    name = format_image_name(split, index, nsd_id)
    parsed = parse_image_name(name)
    assert (parsed.split, parsed.index, parsed.nsd_id) == (split, index, nsd_id)


@given(st.text(max_size=40))
def test_parser_rejects_or_roundtrips(text):
    try:
        parsed = parse_image_name(text)
    except ValueError as err:
        assert repr(text) in str(err) or "index" in str(err) or "NSD id" in str(err)
    else:
        assert parsed.filename == text


@pytest.mark.parametrize("bad", ["train-1_nsd-00012.png", "train-0001_nsd-12.png", "val-0001_nsd-00012.png",
                                 "train-0001_nsd-00012.jpg", "train-0000_nsd-00012.png", "train-0001_nsd-73000.png"])
def test_parser_rejects(bad):
    with pytest.raises(ValueError, match="train-0001|index|NSD id|does not match"):
        parse_image_name(bad)


def test_subject_name():
    assert subject_name(1) == "subj01" == subject_name("1") == subject_name("subj01") == subject_name("01")
    with pytest.raises(ValueError):
        subject_name("s1")


def test_real_counts_and_classes():
    assert sum(c["train"] for c in REAL_COUNTS.values()) == 9841 * 4 + 9082 * 2 + 8779 * 2
    assert REAL_COUNTS["subj06"]["lh"] == 18978 and REAL_COUNTS["subj08"]["rh"] == 20530
    assert sum(len(v) for v in ROI_CLASSES.values()) == 31
