"""Pure Matrix logic: no I/O, no trio, no sqlite. Values in, values out."""
