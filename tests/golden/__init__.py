"""Golden outputs of the statement sources over the real samples in ../shared/samples.

Regenerate with `python -m tests.golden.generate`; `--check` only compares.
"""
