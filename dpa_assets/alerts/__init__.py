"""Failure alerts: archived in a journal that survives until the on-call reads it."""
