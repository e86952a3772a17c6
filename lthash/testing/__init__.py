"""Helpers for the reliability tests: fault injection around real ``lthash`` commands."""
