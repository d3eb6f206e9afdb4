"""The run folder's primitives, used by every layer that writes or reads a file.

- :mod:`.atomic`: writes that never leave a half-written file (temporary file, fsync, rename);
- :mod:`.checkpoint`: torch files saved atomically and read with ``weights_only=True``;
- :mod:`.rundir`: every path of a run folder (:class:`RunDir`) and safe run names;
- :mod:`.runlock`: one process per run folder (a kernel lock).

May import: errors, config, system.
"""
