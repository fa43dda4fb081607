"""Helpers the tests share: waiting on conditions, the local cluster, real processes."""
