"""Process communication: pipes, FIFOs, message queues, signals, shared memory (seed §4.1.2)."""
