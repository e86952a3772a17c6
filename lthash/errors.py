"""The one error type a user sees: a message naming the key, file or class at fault."""


class LthashError(Exception):
    """A user-facing failure (bad config, bad input file, impossible request).

    The CLI prints the message without a traceback and exits with status 2.
    """
