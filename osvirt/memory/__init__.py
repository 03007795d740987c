"""Memory: mappings, protection, faults and residency (seed §4.2)."""
