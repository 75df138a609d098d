"""Numbers as people read them: percent, counted nouns, units scaled to the model."""

from matryoshka_llava.formatting import bytes_unit, count_noun, flops_unit, human_bytes, human_count, percent


def test_percent_and_counted_nouns():
    assert percent(0.5312) == "53.1" and percent(1.0) == "100.0" and percent(0.0) == "0.0"
    assert count_noun(1, "visual token") == "1 visual token"
    assert count_noun(1.0, "visual token") == "1 visual token"
    assert count_noun(9, "visual token") == "9 visual tokens"
    assert count_noun(12.5, "visual token") == "12.5 visual tokens"
    assert count_noun(2.3456, "visual token") == "2.3 visual tokens"


def test_units_scale_to_the_largest_value():
    assert flops_unit([3.2e12, 5e11]) == ("TFLOPs", 1e12)
    assert flops_unit([4.1e8, 2e6]) == ("MFLOPs", 1e6)  # a tiny model: not a column of 0.000 TFLOPs
    assert flops_unit([999.0]) == ("FLOPs", 1.0) and flops_unit([]) == ("FLOPs", 1.0)
    assert bytes_unit([3 * 2**20, 10]) == ("MiB", 2**20) and bytes_unit([10]) == ("bytes", 1)


def test_parameter_counts_and_sizes():
    assert human_count(7_063_000_000) == "7.06B" and human_count(350_000_000) == "350M"
    assert human_count(1_234_567) == "1.23M" and human_count(85_000) == "85k" and human_count(512) == "512"
    assert human_bytes(13.5 * 2**30) == "13.5 GiB" and human_bytes(512) == "512 bytes"
