"""The planning layer: it decides, the rest does.

``fingerprint``: what a data set folder holds; ``timing``: how fast this machine trains a candidate; ``rules``:
plain functions from both to a recipe (a YAML config that ``ternaus-zoo fit`` runs unchanged), each choice
with its reason; ``selection``: ensembles and post-processing chosen on out-of-fold predictions.
"""
