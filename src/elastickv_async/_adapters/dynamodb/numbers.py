"""DynamoDB ``N`` literals as key material.

Two renderings of a number key exist. The dump names an item file after the exact rational
value of its ``N`` key, printed like Go's ``big.Rat.RatString`` (``"1.0"`` -> ``1``, ``"0.5"`` ->
``1/2``, REFERENCE_NOTES §3.1); :func:`canonical_number` reproduces ``Rat.SetString``'s syntax
so that exactly the literals Go accepts are canonicalised. The store orders numeric keys with
an order-preserving byte encoding (§6.4), :func:`numeric_key_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, Rounded
from fractions import Fraction
from typing import Final

from ..._core.errors import DumpTreeError
from ..._core.gocompat import go_trim_space
from .errors import tree_error

__all__ = ["canonical_number", "numeric_key_bytes"]

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
#: ``Rat.SetString`` gives up on larger decimal (5**n) and binary (2**n) exponents.
_MAX_EXP5: Final = 10**6
_MAX_EXP2: Final = 10**7
#: Below these sizes int <-> decimal str stays under CPython's 4300-digit limit.
_STR_SAFE_BITS: Final = 14000
_STR_SAFE_DIGITS: Final = 4000
#: Exact integer arithmetic for huge powers (never rounds: inexact results would raise).
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, Rounded])


class _Syntax(Exception):
    """The literal is not in ``big.Rat`` syntax."""


def _digit_value(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - ord("0")
    if "a" <= ch <= "z":
        return ord(ch) - ord("a") + 10
    if "A" <= ch <= "Z":
        return ord(ch) - ord("A") + 10
    return 99


@dataclass(slots=True)
class _Scanner:
    """A cursor over ``text`` like the ``io.ByteScanner`` Go's parsers read (the syntax is
    ASCII, so characters stand in for Go's bytes)."""

    text: str
    pos: int = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def sign(self) -> bool:
        """Consume an optional ``+``/``-``; True for minus. Go fails on empty input here."""
        if self.at_end():
            raise _Syntax
        ch = self.peek()
        if ch in "+-":
            self.pos += 1
        return ch == "-"

    def natural(self, *, frac_ok: bool) -> tuple[int, int, int]:
        """Go's ``nat.scan`` with base 0: ``(value, base, count)``.

        ``count <= 0`` means a radix point was seen and ``-count`` fractional digits follow it.
        Underscores may separate digits (and follow a base prefix); misplaced ones are errors.
        """
        prev = "."
        bad_separator = False
        base = 10
        prefix = ""
        count = 0
        if self.peek() == "0":
            prev = "0"
            count = 1
            self.pos += 1
            ch = self.peek()
            if ch:
                if ch in "bB":
                    base, prefix = 2, "b"
                elif ch in "oO":
                    base, prefix = 8, "o"
                elif ch in "xX":
                    base, prefix = 16, "x"
                elif not frac_ok:
                    base, prefix = 8, "0"
                if prefix:
                    count = 0
                    if prefix != "0":
                        self.pos += 1
        digits: list[str] = []
        point = -1
        while not self.at_end():
            ch = self.peek()
            if ch == "." and frac_ok:
                frac_ok = False
                if prev == "_":
                    bad_separator = True
                prev = "."
                point = count
            elif ch == "_":
                if prev != "0":
                    bad_separator = True
                prev = "_"
            else:
                digit = _digit_value(ch)
                if digit >= base:
                    break
                prev = "0"
                count += 1
                digits.append(ch)
            self.pos += 1
        if bad_separator or prev == "_":
            raise _Syntax
        if count == 0:
            if prefix == "0":
                # A lone octal prefix "0" (then a non-octal digit) reads as decimal zero.
                return 0, 10, 1
            raise _Syntax
        if point >= 0:
            count = point - count
        # A leading "0" counts as a digit without being collected; it adds no value.
        return _digits_value("".join(digits) or "0", base), base, count

    def exponent(self) -> tuple[int, int]:
        """Go's ``scanExponent`` (binary ``p`` allowed, separators allowed): ``(exp, base)``."""
        ch = self.peek()
        if ch in ("e", "E"):
            base = 10
        elif ch in ("p", "P"):
            base = 2
        else:
            return 0, 10
        self.pos += 1
        negative = self.peek() == "-"
        if self.peek() in ("+", "-"):
            self.pos += 1
        prev = "."
        bad_separator = False
        digits = ""
        while not self.at_end():
            ch = self.peek()
            if "0" <= ch <= "9":
                digits += ch
                prev = "0"
            elif ch == "_":
                if prev != "0":
                    bad_separator = True
                prev = "_"
            else:
                break
            self.pos += 1
        if not digits:
            raise _Syntax
        exp = -int(digits) if negative else int(digits)
        if not _INT64_MIN <= exp <= _INT64_MAX or bad_separator or prev == "_":
            raise _Syntax
        return exp, base


def _digits_value(digits: str, base: int) -> int:
    if base != 10 or len(digits) < _STR_SAFE_DIGITS:
        return int(digits, base)
    # int(str) refuses more than 4300 decimal digits; Decimal has no such limit.
    return int(Decimal(digits))


def _parse_integer(text: str) -> int:
    """Go's ``Int.SetString(text, 0)``: sign, then an integer with an optional base prefix."""
    scanner = _Scanner(text)
    negative = scanner.sign()
    value, _, _ = scanner.natural(frac_ok=False)
    if not scanner.at_end():
        raise _Syntax
    return -value if negative else value


def _fraction_text(value: Fraction) -> str:
    if value.denominator == 1:
        return _int_text(value.numerator)
    return f"{_int_text(value.numerator)}/{_int_text(value.denominator)}"


def _int_text(value: int) -> str:
    if value.bit_length() < _STR_SAFE_BITS:
        return str(value)
    return format(Decimal(value), "f")


def _scaled_text(factor: int, twos: int, fives: int) -> str:
    """Decimal digits of ``factor * 2**twos * 5**fives``: the common power of ten becomes
    zeros and the rest is computed exactly in Decimal (``Rat.SetString`` allows exponents up
    to 10**7, whose digits Python's int would print in quadratic time)."""
    tens = min(twos, fives)
    base, power = (2, twos - tens) if twos > fives else (5, fives - tens)
    if power == 0:
        rest = _int_text(factor)
    else:
        exact = _EXACT.multiply(Decimal(factor), _EXACT.power(Decimal(base), power))
        rest = format(exact, "f")
    return rest + "0" * tens


def _rat_text(text: str) -> str:
    """``big.Rat.SetString(text)`` then ``RatString()``; raises :class:`_Syntax` where Go
    returns ``ok == false``."""
    if not text:
        raise _Syntax
    sep = text.find("/")
    if sep >= 0:
        numerator = _parse_integer(text[:sep])
        scanner = _Scanner(text[sep + 1 :])
        denominator, _, _ = scanner.natural(frac_ok=False)
        if not scanner.at_end() or denominator == 0:
            raise _Syntax
        return _fraction_text(Fraction(numerator, denominator))
    scanner = _Scanner(text)
    negative = scanner.sign()
    mantissa, base, fcount = scanner.natural(frac_ok=True)
    exp, exp_base = scanner.exponent()
    if not scanner.at_end():
        raise _Syntax
    if mantissa == 0:
        return "0"
    exp2 = exp5 = 0
    if fcount < 0:
        if base == 10:
            exp5 = exp2 = fcount
        else:
            exp2 = fcount * {2: 1, 8: 3, 16: 4}[base]
    if exp_base == 10:
        exp5 += exp
    exp2 += exp
    if abs(exp5) > _MAX_EXP5 or abs(exp2) > _MAX_EXP2:
        raise _Syntax
    # value = mantissa * 2**exp2 * 5**exp5; move the mantissa's own 2s and 5s into the
    # exponents so that numerator and denominator below share no factor.
    twos = (mantissa & -mantissa).bit_length() - 1
    mantissa >>= twos
    exp2 += twos
    while mantissa % 5 == 0:
        mantissa //= 5
        exp5 += 1
    top = _scaled_text(mantissa, max(exp2, 0), max(exp5, 0))
    bottom = _scaled_text(1, max(-exp2, 0), max(-exp5, 0))
    sign = "-" if negative else ""
    return sign + top if bottom == "1" else f"{sign}{top}/{bottom}"


def canonical_number(literal: str) -> str:
    """The filename form of an ``N`` key: ``big.Rat.RatString`` of the trimmed literal.

    Integers print as ``"123"``, other values as a reduced ``"p/q"``; a literal Go cannot
    parse comes back trimmed but otherwise unchanged.
    """
    trimmed = go_trim_space(literal)
    try:
        return _rat_text(trimmed)
    except _Syntax:
        return trimmed


# --- order-preserving key bytes ------------------------------------------------------------

_NEGATIVE: Final = 0x00
_ZERO: Final = 0x01
_POSITIVE: Final = 0x02
_DIGITS: Final = frozenset("0123456789")


def _wrap_int64(value: int) -> int:
    # The reference computes the exponent in int64 arithmetic; keep its wrap-around.
    return (value - _INT64_MIN) % (1 << 64) + _INT64_MIN


def _invert(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


def _ordered_uint64(value: int) -> bytes:
    raw = value.to_bytes(8, "big").lstrip(b"\x00") or b"\x00"
    return bytes([len(raw)]) + raw


def _ordered_int64(value: int) -> bytes:
    if value < 0:
        return bytes([_NEGATIVE]) + _invert(_ordered_uint64(-value))
    if value == 0:
        return bytes([_ZERO])
    return bytes([_POSITIVE]) + _ordered_uint64(value)


def _bad_number(literal: str, why: str) -> DumpTreeError:
    return tree_error("ErrDDBEncodeInvalidItem", f"number {literal[:64]!r}: {why}")


def numeric_key_bytes(literal: str) -> bytes:
    """The store's order-preserving bytes of a number key (before segment escaping).

    Zero is ``01``. Otherwise the body is the ordered decimal exponent of the first
    significant digit, ``00``, then the significant digits in ASCII; positives are ``02`` +
    body, negatives ``00`` + the body with every bit inverted. Raises
    ``ErrDDBEncodeInvalidItem`` on a malformed literal.
    """
    text = go_trim_space(literal)
    if not text:
        raise _bad_number(literal, "empty literal")
    negative = text[0] == "-"
    if text[0] in "+-":
        text = text[1:]
    if not text:
        raise _bad_number(literal, "sign only")
    exp10 = 0
    cut = min((i for i in (text.find("e"), text.find("E")) if i >= 0), default=-1)
    if cut >= 0:
        exp_text = go_trim_space(text[cut + 1 :])
        text = text[:cut]
        body = exp_text[1:] if exp_text[:1] in ("+", "-") else exp_text
        if not exp_text:
            raise _bad_number(literal, "empty exponent")
        if not body or not set(body) <= _DIGITS or not _INT64_MIN <= int(exp_text) <= _INT64_MAX:
            raise _bad_number(literal, f"bad exponent {exp_text!r}")
        exp10 = int(exp_text)
    if text.count(".") > 1:
        raise _bad_number(literal, "more than one decimal point")
    int_part, _, frac_part = text.partition(".")
    if not int_part and not frac_part:
        raise _bad_number(literal, "no digits")
    if not set(int_part) <= _DIGITS or not set(frac_part) <= _DIGITS:
        raise _bad_number(literal, "not a decimal number")
    combined = int_part + frac_part
    significant = combined.lstrip("0")
    leading_zeros = len(combined) - len(significant)
    digits = significant.rstrip("0")
    if not digits:
        return bytes([_ZERO])
    exponent = _wrap_int64(len(int_part) + exp10 - leading_zeros)
    body_bytes = _ordered_int64(exponent) + b"\x00" + digits.encode("ascii")
    if negative:
        return bytes([_NEGATIVE]) + _invert(body_bytes)
    return bytes([_POSITIVE]) + body_bytes
