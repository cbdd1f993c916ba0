"""E-mail: the outbox (sent once, never lost) and failure alerts."""
