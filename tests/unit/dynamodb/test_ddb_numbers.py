"""DynamoDB N keys: Go big.Rat canonical filenames and the store's ordered key bytes."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from ddb_support import golden_case
from hypothesis import given
from hypothesis import strategies as st
from support import raises_code

from elastickv_async._adapters.dynamodb.keys import ordered_segment
from elastickv_async._adapters.dynamodb.numbers import canonical_number, numeric_key_bytes
from elastickv_async._core.errors import DumpTreeError
from elastickv_async._core.gocompat import go_trim_space

# Literal -> big.Rat.RatString, worked out by hand from the Rat.SetString grammar.
CANONICAL = [
    # From golden ddb_number_keys / CASES.md quirk 3.
    ("1.0", "1"),
    ("1e2", "100"),
    ("-0", "0"),
    ("0.5", "1/2"),
    ("1E+3", "1000"),
    ("007", "7"),
    ("-1e-3", "-1/1000"),
    ("-12.75", "-51/4"),
    ("3.14159", "314159/100000"),
    ("123456789012345678901234567890", "123456789012345678901234567890"),
    # Go syntax beyond plain decimals.
    ("+7", "7"),
    (" 5\n", "5"),
    (".5", "1/2"),
    ("5.", "5"),
    ("1_000", "1000"),  # separators between digits
    ("0_7", "7"),  # a leading 0 is decimal in float syntax
    ("0x10", "16"),
    ("0x_1", "1"),  # a separator may follow the prefix
    ("0x1.8p1", "3"),  # hex mantissa with a binary exponent: 1.5 * 2
    ("0b101.1", "11/2"),
    ("0o17", "15"),
    ("1p4", "16"),
    ("2e-1", "1/5"),
    ("0e9999999999", "0"),  # zero never looks at the exponent range
    # Fractions: dividend with base prefixes (a bare 0 prefix is octal here), divisor unsigned.
    ("1/2", "1/2"),
    ("-3/6", "-1/2"),
    ("010/1", "8"),
    ("0x10/0b10", "8"),
    ("6/3", "2"),
    # Unparseable: trimmed input comes back.
    ("", ""),
    ("  ", ""),
    ("abc", "abc"),
    ("1__0", "1__0"),
    ("_1", "_1"),
    ("1_", "1_"),
    ("1_.5", "1_.5"),
    ("1e", "1e"),
    ("1e+", "1e+"),
    (".", "."),
    ("- 5", "- 5"),
    ("Inf", "Inf"),
    ("NaN", "NaN"),
    ("1/0", "1/0"),
    ("1/-2", "1/-2"),
    ("08/1", "08/1"),  # octal dividend with a non-octal digit
    ("/2", "/2"),
    ("1/2/3", "1/2/3"),
    ("1.5.5", "1.5.5"),
    ("0x1e", "30"),  # 'e' is a hex digit, not an exponent
    ("1e1000001", "1e1000001"),  # decimal exponent over 1e6
    ("1p10000001", "1p10000001"),  # binary exponent over 1e7
    ("1e9223372036854775808", "1e9223372036854775808"),  # exponent overflows int64
    (" \x1c5 ", "\x1c5"),  # Go's TrimSpace keeps U+001C (Python's strip would not)
]


@pytest.mark.parametrize(("literal", "expected"), CANONICAL)
def test_canonical_number(literal: str, expected: str) -> None:
    assert canonical_number(literal) == expected


def test_canonical_number_prints_numbers_longer_than_python_str_limit() -> None:
    assert canonical_number("1e5000") == "1" + "0" * 5000
    assert canonical_number("1e-5000") == "1/1" + "0" * 5000
    assert canonical_number("7" * 5000) == "7" * 5000
    assert canonical_number("0." + "0" * 4999 + "25") == "1/4" + "0" * 4999  # 25e-5001


def test_canonical_number_extreme_exponents_go_accepts() -> None:
    # 5e-1000000 = 1 / (2 * 10**999999); |exp5| = 10**6 is still accepted.
    assert canonical_number("5e-1000000") == "1/2" + "0" * 999999
    assert canonical_number("4e-1000000") == "1/25" + "0" * 999998
    # 2**9999999 (|exp2| <= 10**7): check its length and both ends independently.
    text = canonical_number("1p9999999")
    assert len(text) == math.floor(9999999 * math.log10(2)) + 1
    assert text.endswith(str(pow(2, 9999999, 10**12)).zfill(12))
    assert text.startswith("4524908653")  # 10 ** frac(9999999 * log10 2) = 4.52490865...


@given(
    # Go gives up on exponents beyond 10**6; stay well inside.
    st.decimals(allow_nan=False, allow_infinity=False).filter(
        lambda d: abs(int(d.as_tuple().exponent)) < 10_000
    ),
    st.sampled_from(["{}", "{:f}", "{:e}", "{:E}", " {} "]),
)
def test_canonical_number_is_the_exact_rational(value: Decimal, style: str) -> None:
    """Any decimal literal gives the reduced fraction of its exact value (Python's Fraction
    is the oracle)."""
    exact = Fraction(value)
    expected = str(exact.numerator) if exact.denominator == 1 else str(exact)
    assert canonical_number(style.format(value)) == expected


def test_golden_number_key_filenames() -> None:
    case = golden_case("ddb_number_keys")
    names = sorted(
        p.relative_to(case / "expected/dynamodb/metrics/items").as_posix()
        for p in (case / "expected/dynamodb/metrics/items").rglob("*.json")
    )
    assert names == [
        "-1%2F1000/25.json",
        "0/0.json",
        "1%2F2/-51%2F4.json",
        "1/100.json",
        "1000/7.json",
        "123456789012345678901234567890/1.json",
    ]


def test_go_trim_space() -> None:
    assert go_trim_space("\u3000\u2028 a b\t\x85\xa0") == "a b"
    assert go_trim_space("\x1f a \x1e") == "\x1f a \x1e"


# --- ordered key bytes -----------------------------------------------------------------------


def test_numeric_key_bytes_golden_values() -> None:
    # GSI keys of golden enc_ddb_gsi: score 7.5 and 10 as segments.
    assert ordered_segment(numeric_key_bytes("7.5")) == b"\x02\x02\x01\x01\x00\xff75\x00\x01"
    assert ordered_segment(numeric_key_bytes("10")) == b"\x02\x02\x01\x02\x00\xff1\x00\x01"


@pytest.mark.parametrize("zero", ["0", "0.0", "-0", "000", "0e5", "+0.000e-3"])
def test_numeric_key_zero(zero: str) -> None:
    assert numeric_key_bytes(zero) == b"\x01"


def test_numeric_key_layout_by_hand() -> None:
    # 1: positive, exponent 1 (one integer digit) -> 02 | 02 01 01 | 00 | "1".
    assert numeric_key_bytes("1") == b"\x02\x02\x01\x01\x001"
    assert numeric_key_bytes("+1.000") == numeric_key_bytes("1")
    # 0.05: exponent -1 -> 00 then the inverted ordered uint64 (01 01 -> FE FE).
    assert numeric_key_bytes("0.05") == b"\x02\x00\xfe\xfe\x005"
    # 1e256 has exponent 257 = 0x0101 -> width 2.
    assert numeric_key_bytes("1e256") == b"\x02\x02\x02\x01\x01\x001"
    # -1: 00 then every body bit inverted.
    assert numeric_key_bytes("-1") == b"\x00" + bytes(b ^ 0xFF for b in b"\x02\x01\x01\x001")
    assert numeric_key_bytes(" 12.50e1 ") == numeric_key_bytes("125")


def test_numeric_key_exponent_wraps_like_int64() -> None:
    # len("1") + 9223372036854775807 overflows to -2**63 in the reference's int64 arithmetic.
    wrapped = numeric_key_bytes("1e9223372036854775807")
    assert wrapped == b"\x02\x00" + bytes(b ^ 0xFF for b in b"\x08\x80" + b"\x00" * 7) + b"\x001"


@pytest.mark.parametrize(
    "literal",
    [
        "",
        " ",
        "+",
        "-",
        "1e",
        "1e+",
        "1e1.5",
        "1ex",
        "1e9223372036854775808",
        "1.2.3",
        ".",
        "e5",
        "abc",
        "0x10",
        "1_000",
        "١",
    ],
)
def test_numeric_key_rejects_malformed(literal: str) -> None:
    with raises_code(DumpTreeError, "ErrDDBEncodeInvalidItem"):
        numeric_key_bytes(literal)


def _digits(value: Decimal) -> tuple[int, str]:
    """Exponent and significant digits of a non-zero decimal, as the key encodes them."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    significant = text.lstrip("0")
    return len(text) + exponent - (len(text) - len(significant)), significant.rstrip("0")


def _prefix_quirk(a: Decimal, b: Decimal) -> bool:
    """Two negatives with the same exponent whose digit strings are a proper prefix pair."""
    if a >= 0 or b >= 0:
        return False
    (ea, da), (eb, db) = _digits(a), _digits(b)
    return ea == eb and da != db and (da.startswith(db) or db.startswith(da))


numbers = st.decimals(
    min_value=Decimal("-1e30"), max_value=Decimal("1e30"), allow_nan=False, places=None
).filter(lambda d: d.is_finite())


@given(numbers, numbers)
def test_numeric_key_order_matches_numeric_order(a: Decimal, b: Decimal) -> None:
    key_a = ordered_segment(numeric_key_bytes(str(a)))
    key_b = ordered_segment(numeric_key_bytes(str(b)))
    if a == b:
        assert key_a == key_b
    elif not _prefix_quirk(a, b):
        assert (key_a < key_b) == (a < b)


def test_numeric_key_negative_prefix_quirk_is_kept() -> None:
    """The live encoding orders -1 before -1.5 (the digit string "1" prefixes "15" and the
    body inversion does not undo prefix order). Restored keys must match the store's bytes,
    so the quirk is reproduced, not fixed."""
    assert Fraction(-1) > Fraction(-3, 2)
    assert ordered_segment(numeric_key_bytes("-1")) < ordered_segment(numeric_key_bytes("-1.5"))
