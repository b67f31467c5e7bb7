"""Helpers the tests share, not tests: fault server, source rows, models files, trainer loader."""
