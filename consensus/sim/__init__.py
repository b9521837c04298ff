"""Deterministic whole-cluster simulations of the consensus core (``python -m consensus.sim``).

Everything here is driven by simulated time and seeded ``random.Random`` instances: the same
seed replays the same run. See docs/simulator.md.
"""
