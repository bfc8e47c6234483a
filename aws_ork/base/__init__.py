"""The base layer: what every stage may use, importing nothing of aws_ork above it.

Errors, ids, MinionIdTemplate, text bounding and escaping, Salt's key vocabulary and
fingerprints, atomic files, the trust rule for a directory (CertCacheDir) and the AWS error
tally live here, so that the stages (``sqs``, ``events``, ``checks``, ``keys``,
``lifecycle``, ``mirror``, ``runtime``) never import each other sideways for a helper.
"""
