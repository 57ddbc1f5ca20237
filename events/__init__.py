"""The event backbone: the one writer of `events` (with the transactional
outbox rows its listeners need), the outbox repository and the dispatcher
that hands outbox rows to Temporal workflows."""
