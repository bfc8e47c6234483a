"""Stage 1, the queue: long-poll SQS, hand messages to the loop, delete or retry them.

``queue`` is the only module that calls SQS; ``receiver`` runs the next long poll while a
batch is handled.
"""
