"""SQLite storage: one module of plain functions per group of tables.

Storage functions take a ``sqlite3.Connection`` and never commit: the caller of
``Database.write`` owns the transaction.
"""
