"""Several daemons on one database: the pure model of membership and workspace leases
(docs/architecture.md §15)."""
