"""Entrypoints for ``ray job submit``; each parses config, calls the library and reports."""
