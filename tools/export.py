#!/usr/bin/env python
"""``python tools/export.py ...`` from a checkout: the ``attnzoo-export`` command (:mod:`attnzoo.cli.export`)."""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from attnzoo.cli.export import main  # noqa: E402

if __name__ == '__main__':
    main()
