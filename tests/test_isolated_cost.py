"""`damp bench`'s ratios beside a suite's wall-clock: ranges, and when the two order costs differently."""

from __future__ import annotations

from damp.isolated_cost import BenchRow, isolated_sentence, ordering_note, ratio_range

ROWS = [BenchRow("a.json", 1.1, {"damp": 1.35, "sam": 2.49}), BenchRow("b.json", 1.06, {"damp": 1.27, "sam": 2.41})]


def test_ranges_and_the_sentence():
    assert ratio_range(ROWS, "damp") == "1.27-1.35" and ratio_range(ROWS, "asam") is None
    assert ratio_range([ROWS[0], BenchRow("c.json", 1.0, {"damp": 1.349})], "damp") == "1.35"  # equal when rounded
    assert isolated_sentence(ROWS).endswith("DAMP/SGD 1.27-1.35, SAM/SGD 2.41-2.49.")
    assert isolated_sentence([]) == ""


def test_a_note_only_when_the_wall_clock_orders_the_costs_the_other_way():
    assert ordering_note(ROWS, {"damp": 1.36, "sam": 2.40}) == ""  # both say DAMP is cheaper
    note = ordering_note(ROWS, {"damp": 1.36, "sam": 1.06})
    assert note.startswith("The isolated ratios order DAMP and SAM the other way round (DAMP the cheaper")
    overlapping = [BenchRow("a.json", 1.0, {"damp": 2.0, "sam": 1.9}),
                   BenchRow("b.json", 1.0, {"damp": 1.8, "sam": 2.1})]
    assert ordering_note(overlapping, {"damp": 1.36, "sam": 1.06}) == ""  # the runs disagree: no order to set beside
    assert ordering_note(ROWS, {"damp": 1.36}) == "" and ordering_note([], {"damp": 1.0, "sam": 2.0}) == ""
