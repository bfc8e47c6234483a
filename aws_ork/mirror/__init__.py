"""Stage 5, the S3 mirror of the pki tree, kept in step by a worker thread of its own.

``worker`` (the thread, debounce, retries) -> ``planner`` (what to upload or delete) ->
``bucket`` (the only module that calls S3 for the mirror); ``journal`` and ``manifest`` are
its durable state in StateDir; ``restore`` brings the mirror back into PkiDir.
"""
