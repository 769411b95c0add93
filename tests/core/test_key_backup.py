"""The key backup replacement rules (end_to_end_encryption.md "Server-side key backups")."""

from __future__ import annotations

import pytest

from pocketserver.core.key_backup import KeyQuality, should_replace

Q = KeyQuality


@pytest.mark.parametrize(
    ("existing", "new", "replace"),
    [
        (None, Q(False, 5, 5), True),
        # is_verified differs: the verified key wins, whatever the rest says.
        (Q(False, 0, 0), Q(True, 9, 9), True),
        (Q(True, 9, 9), Q(False, 0, 0), False),
        # Same is_verified: the lower first_message_index wins.
        (Q(True, 5, 0), Q(True, 3, 9), True),
        (Q(False, 3, 0), Q(False, 5, 0), False),
        # Same is_verified and first_message_index: the lower forwarded_count wins.
        (Q(False, 3, 2), Q(False, 3, 1), True),
        (Q(True, 3, 1), Q(True, 3, 2), False),
        # All equal: the stored key stays.
        (Q(True, 3, 1), Q(True, 3, 1), False),
    ],
)
def test_should_replace(existing: KeyQuality | None, new: KeyQuality, replace: bool) -> None:
    assert should_replace(existing, new) is replace
