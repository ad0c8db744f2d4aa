"""Durable follow-ups (docs/architecture.md §7): the outbox worker and the jobs it runs.

Rows are written in the same transaction as the change that causes them (the termination
funnel, state storage, run creation, drift checks); `worker.OutboxWorker` claims them with a
lease and runs them with bounded concurrency and retries; `jobs` and `followups` say what each
kind does. Kept free of imports so the run pipeline can use its pure parts without a cycle.
"""
