"""Files: filesystem inspection, storage, sharing and locks (seed §4.3)."""
