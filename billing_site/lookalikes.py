"""The confusable skeleton of an email: what it looks like, not which code points it uses.

`аdmin` (Cyrillic а), `ａdmin` (full width) and `admİn` all have the skeleton
`admin`. Compatibility forms are folded (NFKD), accents and combining marks
dropped, case folded, and each remaining character that is a homoglyph of a
Latin one (confusable-homoglyphs, from Unicode's confusables data) replaced by it.
"""

import unicodedata
from functools import lru_cache

from confusable_homoglyphs import confusables


@lru_cache(maxsize=4096)
def _latin(char: str) -> str:
    if char.isascii():
        return char
    found = confusables.is_confusable(char, greedy=False, preferred_aliases=["latin"])
    if found:
        for glyph in found[0]["homoglyphs"]:
            if glyph["c"].isascii():
                return glyph["c"].lower()
    return char


def skeleton(email: str) -> str:
    """The look-alike key of `email` (lower case, ASCII where a look-alike exists)."""
    decomposed = unicodedata.normalize("NFKD", email)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return "".join(_latin(char) for char in bare)
