"""Stage 4, the keys: act on the master's key store through Salt's own ``salt.key`` API.

``manager`` makes exact-id accepts and deletes,
``backend`` does them in O(1) with Salt's cache and event objects, ``autosign`` writes the
pre-authorisation stubs, ``watcher`` notices changes Salt makes by itself. Where Salt keeps
keys is :mod:`aws_ork.base.saltkeys`.
"""
