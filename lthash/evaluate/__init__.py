"""Retrieval evaluation: packed codes, exact mAP, curves, search."""
