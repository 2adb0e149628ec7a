"""The union of search patterns finds a match exactly when one of the patterns does.

The rewrites (trie of literal prefixes, distributed leading classes and groups, anchored
branches) are checked one by one on small cases, then against the plain per-pattern search
on random patterns built from the regex features the rewrites have to respect.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visit_counter.core.pattern_union import NEVER_MATCHES, union_pattern


def any_pattern_finds(patterns: list[str], text: str) -> bool:
    return any(re.search(pattern, text) for pattern in patterns)


def union_finds(patterns: list[str], text: str) -> bool:
    return re.search(union_pattern(patterns), text) is not None


@pytest.mark.parametrize(
    ("patterns", "found", "missed"),
    [
        (["Googlebot-News", "Googlebot-Image"], ["x Googlebot-Image y"], ["Googlebot-Video"]),
        (["Googlebot", "Googlebot-News"], ["Googlebot", "Googlebot-News"], ["Google"]),
        (["abc+d"], ["abcccd", "abcd"], ["abd"]),
        (["ab?c"], ["ac", "abc"], ["abbc"]),
        (["a\\.b"], ["a.b"], ["axb"]),
        (["a.b"], ["axb"], ["ab"]),
        (["a\\d+"], ["a12"], ["ab"]),
        (["x{2}y"], ["xxy"], ["xy"]),
        (["^curl"], ["curl/8"], ["xcurl/8"]),
        (["Automaton|Newsify Feed"], ["Newsify Feed x", "Automaton"], ["Newsify"]),
        (["[wW]get"], ["Wget/1", "wget"], ["WGET"]),
        (["[^a]b"], ["xb"], ["ab", "b"]),
        (["[a-c]x"], ["bx"], ["dx"]),
        (["(^| )sentry\\/"], ["sentry/1", "a sentry/1"], ["asentry/1"]),
        (["(sistrix|SISTRIX) [cC]rawler"], ["SISTRIX Crawler"], ["Sistrix crawler"]),
        (["(ab)+c"], ["ababc", "abc"], ["ac"]),
        (["(?:ab|cd)e"], ["cde"], ["ce"]),
        (["(a(b|c))d"], ["acd"], ["ad"]),
        (["Service$"], ["AssociationService"], ["Service x"]),
        (["^(^|a)b"], ["b", "ab"], ["xab"]),
    ],
)
def test_the_union_finds_what_the_patterns_find(
    patterns: list[str], found: list[str], missed: list[str]
) -> None:
    for text in found:
        assert union_finds(patterns, text), text
    for text in missed:
        assert not union_finds(patterns, text), text


def test_no_pattern_matches_nothing() -> None:
    assert union_pattern([]) == NEVER_MATCHES
    assert not union_finds([], "")


def test_an_empty_pattern_matches_everything() -> None:
    assert union_finds(["abc", ""], "")
    assert union_finds(["abc|"], "xyz")


def test_shared_prefixes_are_written_once() -> None:
    assert union_pattern(["Googlebot-News", "Googlebot-Image"]).count("Googlebot") == 1


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?P<x>a)(?P=x)", "\\\\\\1"])
def test_backreferences_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="backreference"):
        union_pattern([pattern])


def test_an_escaped_backslash_before_a_digit_is_no_backreference() -> None:
    assert union_finds(["a\\\\1"], "a\\1")


ALPHABET = "abc "
literal = st.sampled_from([*ALPHABET, "\\.", "\\ ", "\\-"])
atom = st.one_of(
    literal,
    st.just("."),
    st.sampled_from(["[ab]", "[^a]", "[a-b]", "[ ]", "\\d", "\\s"]),
)
quantified = st.tuples(atom, st.sampled_from(["", "", "", "*", "+", "?", "{2}", "{1,2}"])).map(
    "".join
)
sequence = st.lists(quantified, min_size=0, max_size=4).map("".join)
group = st.lists(sequence, min_size=1, max_size=3).map(lambda parts: "(" + "|".join(parts) + ")")
piece = st.one_of(quantified, quantified, group, group.map(lambda text: text + "?"))
branch = st.tuples(
    st.sampled_from(["", "", "^"]),
    st.lists(piece, min_size=0, max_size=4).map("".join),
    st.sampled_from(["", "", "$"]),
).map("".join)
search_pattern = st.lists(branch, min_size=1, max_size=3).map("|".join)


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(search_pattern, min_size=1, max_size=6),
    texts=st.lists(st.text(alphabet=ALPHABET + ".-1", max_size=8), min_size=1, max_size=8),
)
def test_the_union_agrees_with_searching_each_pattern(
    patterns: list[str], texts: list[str]
) -> None:
    for text in texts:
        assert union_finds(patterns, text) == any_pattern_finds(patterns, text), text
