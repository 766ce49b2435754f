"""Assertions shared by the codec tests."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, settings

from stream.exceptions import DecodeError

#: Fuzz tests run at least 300 examples; a loaded hypothesis profile may ask for more (a
#: long soak run).
FUZZ = settings(
    max_examples=max(300, settings().max_examples),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: An f-string placeholder that was never formatted, e.g. "{field}".
UNFORMATTED = re.compile(r"\{[a-z_]+(![rs])?\}")


def assert_meaningful(err: DecodeError, *fragments: str) -> None:
    text = str(err)
    assert err.reason in DecodeError.REASONS
    assert text == err.message
    assert len(text) > 25, text
    assert not UNFORMATTED.search(text), text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
