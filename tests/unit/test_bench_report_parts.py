"""The benchmark report's marked parts: a run of one section replaces its part, keeps the rest."""

from __future__ import annotations

from bench.report_parts import keep_parts, marked, part_of, with_part


def part(name: str, body: str) -> str:
    return "\n".join(marked(name, [body])) + "\n"


def report(*parts: str) -> str:
    return "# Benchmarks\n\nscenarios table\n\n" + "".join(parts) + "## Machine\n\n| date |\n"


def test_a_part_is_found_with_its_markers_and_nothing_else() -> None:
    text = report(part("move", "move numbers"), part("cluster", "cluster numbers"))

    found = part_of(text, "cluster")

    assert found == part("cluster", "cluster numbers")
    assert part_of(report(), "cluster") is None


def test_a_new_part_replaces_the_old_one_where_it_stood() -> None:
    text = report(part("move", "old move"), part("cluster", "old cluster"))

    updated = with_part(text, "move", part("move", "new move"))

    assert updated == report(part("move", "new move"), part("cluster", "old cluster"))


def test_a_missing_part_goes_before_the_next_part_else_before_the_machine_section() -> None:
    assert with_part(report(part("cluster", "c")), "move", part("move", "m")) == report(
        part("move", "m"), part("cluster", "c")
    )
    assert with_part(report(part("move", "m")), "cluster", part("cluster", "c")) == report(
        part("move", "m"), part("cluster", "c")
    )
    assert with_part("# Benchmarks\n", "cluster", part("cluster", "c")) == (
        "# Benchmarks\n" + part("cluster", "c")
    )


def test_a_whole_report_keeps_the_old_parts_it_did_not_measure_and_only_those() -> None:
    old = report(part("move", "old move"), part("cluster", "old cluster"))
    new = report(part("move", "new move"))

    merged = keep_parts(old, new, ("move",))

    assert merged == report(part("move", "new move"), part("cluster", "old cluster"))
    assert keep_parts(report(), new, ("move",)) == new
