"""Drift detection: scheduled speculative refresh-only plans (`drift_check` per workspace).

`detect` reads drift out of a plan's JSON (pure); `scheduler` queues the check runs. The
pipeline records what a check found, in the transaction that records its plan.
"""
