"""The configs shipped with the package, named ``attnzoo::<task>/<name>.py`` on the command line.

    attnzoo-train attnzoo::classification/demo_digits.py
    attnzoo-train --list-configs

mmengine's own package scheme (``Config.fromfile('mmdet::...')``) accepts only the OpenMMLab packages of its
``MODULE2PACKAGE`` table and reads their ``.mim/`` layout, so it cannot serve attnzoo; this module maps the
``attnzoo::`` prefix to a file instead. The wheel carries the repository's ``configs/`` as ``attnzoo/configs/``
(pyproject.toml's package-dir mapping); in a checkout (``pip install -e .`` or ``tools/*.py``) they are the
repository's ``configs/`` beside the package. ``_base_`` files resolve relative to the config, as mmengine does.
"""
import argparse
import difflib
from pathlib import Path
from typing import List

__all__ = ['PREFIX', 'ListConfigsAction', 'config_root', 'list_configs', 'resolve_config']

PREFIX = 'attnzoo::'
_PACKAGE = Path(__file__).resolve().parents[1]  # the attnzoo package directory


def config_root() -> Path:
    """The directory of the shipped configs: ``attnzoo/configs`` of an installed wheel, else the checkout's
    ``configs/`` beside the package."""
    for root in (_PACKAGE / 'configs', _PACKAGE.parent / 'configs'):
        if root.is_dir():
            return root
    raise FileNotFoundError(f'no configs in {_PACKAGE / "configs"} or {_PACKAGE.parent / "configs"}: '
                            'reinstall attnzoo (its wheel ships them)')


def list_configs() -> List[str]:
    """Every shipped config that can be run (not the ``_base_`` fragments), as ``attnzoo::<task>/<name>.py``."""
    root = config_root()
    return sorted(PREFIX + path.relative_to(root).as_posix() for path in root.rglob('*.py')
                  if '_base_' not in path.relative_to(root).parts)


def resolve_config(config: str) -> str:
    """The file of ``config``: ``attnzoo::<task>/<name>.py`` maps to the shipped config; any other value is a path
    and is returned as it is.

    Raises:
        FileNotFoundError: ``config`` names no shipped config (the message lists the closest names).
    """
    if not config.startswith(PREFIX):
        return config
    path = config_root() / config[len(PREFIX):]
    if path.is_file():
        if '_base_' in path.relative_to(config_root()).parts:
            raise FileNotFoundError(f'config={config!r} is a _base_ fragment that configs inherit, not a config to '
                                    'run (`--list-configs` lists those)')
        return str(path)
    close = difflib.get_close_matches(config, list_configs(), n=3, cutoff=0.5)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise FileNotFoundError(f'config={config!r} is not a shipped config (`--list-configs` lists them){hint}')


class ListConfigsAction(argparse.Action):
    """``--list-configs``: print :func:`list_configs`, one a line, and exit (as ``--help`` does)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print('\n'.join(list_configs()))
        parser.exit()
