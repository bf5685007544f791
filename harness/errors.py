"""The one exception a user's input can cause; the CLI prints it and exits with code 2."""


class HarnessError(Exception):
    """Bad input or an unusable environment, with a message naming the input and what is valid."""


def first_line(error):
    """An exception's message up to its first line break ('' where it has none)."""
    return (str(error).strip().splitlines() or [""])[0]
