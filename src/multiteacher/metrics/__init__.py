"""Evaluation metrics: ``dense`` (depth, normals, semantics), ``classify`` (accuracy, weighted F1),
``ir`` (ir-measures wrapper: nDCG@10, RR(rel=2)@10, AP, R@100, per-query values).

Import the submodule you need (``from multiteacher.metrics import ir``); ``ir`` imports ir-measures.
"""
