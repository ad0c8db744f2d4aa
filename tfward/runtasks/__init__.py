"""Run tasks, HCP-Terraform compatible: keys, access tokens, signed delivery, and the
coordinator that runs a stage's tasks and waits for their results (docs/protocols.md,
docs/architecture.md §6)."""
