"""Shared test set-up.

mmsegmentation's wheel installs a top-level ``tests`` package into site-packages, so ``tests.*`` imports
would resolve there; helpers in this folder are imported by module name instead (``import fixtures_refer``).
Having this conftest at tests/ puts the folder on ``sys.path`` (pytest's rootdir-based import mode).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
