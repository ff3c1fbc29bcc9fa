"""Message log, delivery index, quarantine store and audit (SQLAlchemy)."""
