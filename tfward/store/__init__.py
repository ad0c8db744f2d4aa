"""Persistence: the schema, its migrations, and the trio-facing store."""
