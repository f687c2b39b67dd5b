"""Scoring and showing what the engines did: pose errors and accuracy (``metrics``),
trajectories in TUM format and their alignment (``trajectory``), simulated odometry drift
(``drift``), relocalizing a list of frames and summarizing it (``localization``), reports, CSV,
poses and plots (``reports``) and rerun recordings (``rerun_log``).

Its modules sit in different layers (docs/architecture.md): ``metrics`` with the foundation,
``trajectory`` and ``drift`` with the data, the rest with the engines; so this file imports none
of them.
"""
