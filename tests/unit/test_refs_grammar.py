"""api/refs.py reads distribution's reference grammar character by character (its
regular expressions cost the CLI's fast pull ~1 ms to compile): the same answers
as those expressions, held here, for every piece of a reference."""

from __future__ import annotations

import random
import re

import pytest

from ignitevm.api import refs

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
GRAMMAR = {
    refs._is_domain: re.compile(
        rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"),
    refs._is_path: re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*"),
    refs._is_tag: re.compile(r"[\w][\w.-]{0,127}"),
    refs._is_digest: re.compile(
        r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"),
    refs._is_sha256: re.compile(r"sha256:[0-9a-f]{64}"),
}
# characters that sit at the grammar's edges: separators, brackets, case, hex, and
# Unicode letters, digits and marks (\w takes some), a dotless i that lowercases long
ALPHABET = [*"aZz09fFgG.-_+:/[]@ \t\n", "é", "ß", "٣", "²", "½", "\u0301", "İ", "ǅ", "\u200b",
            "\U0001d7d8", "\x00"]
SHORT_HEX = "0123456789abcdef"


def _fuzz(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        kind = rng.random()
        size = rng.choice([0, 1, 2, 3, 5, 8, 13])
        text = "".join(rng.choice(ALPHABET) for _ in range(size))
        if kind < 0.3:  # (near a digest: an algorithm and some hex)
            text += ":" + "".join(rng.choice(SHORT_HEX + "AF:g") for _ in range(
                rng.choice([31, 32, 33, 64, 65])))
        elif kind < 0.45:
            text = "sha256:" + "".join(rng.choice(SHORT_HEX + "A") for _ in range(
                rng.choice([63, 64, 65])))
        elif kind < 0.6:  # (near a host with a port, or bracketed)
            text = rng.choice(["[", ""]) + text + rng.choice(["]", ""]) + rng.choice(
                ["", ":", ":5000", ":5a", "]:1"])
        elif kind < 0.75:  # (near a path: components and slashes)
            text = "/".join(rng.choice(["a", "a.b", "a__b", "a___b", "a--b", "a-", "_a",
                                        "a._b", "", "A", text]) for _ in range(rng.randint(1, 4)))
        elif kind < 0.8:  # (a long tag)
            text = "a" * rng.choice([127, 128, 129]) + text
        out.append(text)
    return out


@pytest.mark.parametrize("check", list(GRAMMAR), ids=lambda f: f.__name__)
def test_same_answers_as_the_grammars_expressions(check) -> None:  # type: ignore[no-untyped-def]
    pattern = GRAMMAR[check]
    rng = random.Random(check.__name__)
    texts = [*_fuzz(rng, 40000), "", "a", "localhost", "localhost:5000", "[::1]:5000", "[::1]",
             "[]", "[::1]]", "a" * 128, "a" * 129, "a-", "-a", "sha256:" + "a" * 64,
             "sha256:" + "A" * 64, "a+b.c:" + "0" * 32]
    for text in texts:
        assert check(text) is bool(pattern.fullmatch(text)), (check.__name__, text)


def test_word_characters_are_the_regular_expressions_own() -> None:
    r"""\w of a tag: every code point, as re's Unicode \w reads it."""
    word = re.compile(r"\w")
    for code in range(0x110000):
        ch = chr(code)
        assert refs._is_word(ch) is bool(word.fullmatch(ch)), hex(code)
