"""Policy: thresholds, lists and overrides that turn a score into an action."""
