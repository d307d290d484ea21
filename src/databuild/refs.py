"""Partition refs in bulk: how many one build request may carry (SPEC §9)."""

MAX_REFS = 100_000
"""The most refs one build or analyze request may carry; more is refused (HTTP 413)."""
