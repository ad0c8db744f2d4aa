"""Releases: one change rolled through ordered batches of workspaces (docs/architecture.md §8).

`model` is the release and its state machine, pure; `decide` is the executor's decision, pure;
`executor` is the actor that drives unfinished releases. Persistence is
`tfward.store.releases`.
"""
