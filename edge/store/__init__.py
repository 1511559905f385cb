"""SQLite storage for conversations, messages, feedback, curated answers and the sync outbox."""
