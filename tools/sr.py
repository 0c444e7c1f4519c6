#!/usr/bin/env python
"""``python tools/sr.py ...`` from a checkout: the ``attnzoo-sr`` command (:mod:`attnzoo.cli.sr`)."""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from attnzoo.cli.sr import run  # noqa: E402

if __name__ == '__main__':
    run()
