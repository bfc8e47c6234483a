"""Stage 3, the checks: may this event change a key? Each check only looks and answers.

In the order they run: ``source`` (topic allow-list, SNS signature or an allowed unsigned
source; ``signature`` verifies the envelope), ``ec2`` (EC2 confirms the instance, its group,
tags and the pending key's age), ``terminations`` (without EC2: a launch after its
terminate). None of them changes the key store: that is the key stage's work.
"""
