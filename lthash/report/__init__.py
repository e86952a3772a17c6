"""Tables and figures of the runs."""
