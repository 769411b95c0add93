"""Push rules, their evaluation, unread notification counts and ``GET /notifications``."""
