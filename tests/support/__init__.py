"""Helpers shared by several test suites (importable as ``support`` via pytest's ``pythonpath``)."""
