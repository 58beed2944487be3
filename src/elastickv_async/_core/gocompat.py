"""Go standard-library string behaviour the formats depend on, outside JSON."""

from __future__ import annotations

from typing import Final

__all__ = ["go_trim_space"]

#: Go's ``unicode.IsSpace``: what ``strings.TrimSpace`` strips. Python's ``str.strip`` also
#: strips U+001C..U+001F, which Go keeps.
_GO_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def go_trim_space(text: str) -> str:
    """Go's ``strings.TrimSpace``."""
    return text.strip(_GO_SPACE)
