#!/usr/bin/env python
"""``python tools/test.py ...`` from a checkout: the ``attnzoo-test`` command (:mod:`attnzoo.cli.test`)."""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from attnzoo.cli.test import run  # noqa: E402

if __name__ == '__main__':
    run()
