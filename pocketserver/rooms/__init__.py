"""Rooms: the single writer of room state, room creation, and cached reads of the DAG."""
