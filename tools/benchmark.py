#!/usr/bin/env python
"""``python tools/benchmark.py ...`` from a checkout: the ``attnzoo-benchmark`` command (:mod:`attnzoo.cli.benchmark`)."""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from attnzoo.cli.benchmark import main  # noqa: E402

if __name__ == '__main__':
    main()
