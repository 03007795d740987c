"""Process synchronization: process-shared mutex, condition, barrier, semaphores (seed §4.1.3)."""
