"""Throughput / memory harness against peers (not part of the test suite)."""
