"""The one exception a user's input can cause (the CLI prints it and exits with code 2), and the
reading of a user's YAML file that raises it."""

import yaml


class HarnessError(Exception):
    """Bad input or an unusable environment, with a message naming the input and what is valid."""


def first_line(error):
    """An exception's message up to its first line break ('' where it has none)."""
    return (str(error).strip().splitlines() or [""])[0]


def refuse_unknown_keys(doc, valid, where):
    """A HarnessError naming the keys of mapping `doc` outside `valid` (a misspelt key of a file the
    user writes would otherwise be silently ignored), prefixed with `where`."""
    unknown = sorted(map(str, set(doc) - set(valid)))
    if unknown:
        raise HarnessError(f"{where}: unknown key {', '.join(map(repr, unknown))}: valid keys are "
                           f"{', '.join(sorted(valid))}")


def read_yaml(path, what, loader=yaml.SafeLoader):
    """The YAML (or JSON) document at `path`; a HarnessError "{what} {path} cannot be read: ..." where
    the file is missing, unreadable, no UTF-8 text or no YAML."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise HarnessError(f"{what} {path} cannot be read: {first_line(e)}") from None
