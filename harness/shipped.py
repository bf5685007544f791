"""Where the data shipped with the harness lies: the source tree's profiles/models and
profiles/specs, or, in an installed wheel, their copies inside the package (pyproject.toml maps
them to harness.presets and harness.datasheets)."""

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def shipped_folder(tree_path, installed_name):
    """The source tree's folder at tree_path (relative to the repository root) where it exists,
    else the installed copy harness/<installed_name>."""
    in_tree = os.path.join(os.path.dirname(PACKAGE_DIR), *tree_path.split("/"))
    return in_tree if os.path.isdir(in_tree) else os.path.join(PACKAGE_DIR, installed_name)
