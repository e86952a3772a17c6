"""Dataset readers, long-tail splits and the split file."""
