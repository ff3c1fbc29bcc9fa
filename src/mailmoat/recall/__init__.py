"""Post-delivery recall: the delivery index of what reached which mailbox, and the
connectors that move a delivered message out of a mailbox and back."""
