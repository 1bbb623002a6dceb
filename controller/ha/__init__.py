"""A hot-standby pair: the lease that says who leads, and what changes hands (docs/standby.md)."""
