"""Loss pieces shared by several hash methods, one small module each."""
