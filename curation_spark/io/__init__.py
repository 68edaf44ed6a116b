"""Session and I/O: getting a Spark session, reading and validating the input, atomic
table writes, file-system paths, the run folder and its ``run.json``, checks that need no
session (``preflight``), Arrow batches to numpy blocks (``blocks``) and progress output.
Classic-only Spark APIs are confined here and guarded for Spark Connect."""
