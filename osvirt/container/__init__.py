"""OS-level virtualization (seed §2, §5): what a container runtime assembles.

`osvirt.container.docker` holds what `docker run` gives a container by
default (capabilities, the seccomp profile, masked and read-only paths) and
writes the OCI config a runtime such as runc runs.
"""
