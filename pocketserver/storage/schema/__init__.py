"""SQL migration files (NNN_name.sql), loaded with importlib.resources."""
