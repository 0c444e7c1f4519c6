#!/usr/bin/env python
"""``python tools/publish.py ...`` from a checkout: the ``attnzoo-publish`` command (:mod:`attnzoo.cli.publish`)."""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from attnzoo.cli.publish import main  # noqa: E402

if __name__ == '__main__':
    main()
