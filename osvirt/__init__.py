"""osvirt: operating-system virtualization on real Linux.

One package per area of the article osvirt follows: `osvirt.process`,
`osvirt.ipc`, `osvirt.sync`, `osvirt.memory`, `osvirt.fs`, `osvirt.device`;
`osvirt.env` says what this environment allows. Import the area you need:
nothing here loads the C extension.
"""
__version__ = "0.1.0"
