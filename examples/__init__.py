"""Worked examples of collab used as a library (see each folder's README.md)."""
