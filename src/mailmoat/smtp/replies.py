"""SMTP replies the gateway sends, as named constants (enhanced status codes, RFC 3463).

aiosmtpd's own wording for a few limits lacks enhanced codes; `REWRITE` maps those
replies to ours so clients and logs see one vocabulary.
"""

from __future__ import annotations

S250_QUEUED = "250 2.0.0 Ok: queued as {id}"
S421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
S421_SERVER_BUSY = "421 4.3.2 Too many connections to this server, try again later"
S421_DATA_TIMEOUT = "421 4.4.2 Data timeout, closing connection"
S421_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
S451_SPOOL_FAILED = "451 4.3.0 Temporary failure storing the message, try again later"
S451_TOO_MUCH_IN_TRANSIT = "451 4.3.1 Too much mail in transit, try again later"
S450_VERIFY_LATER = "450 4.1.1 <{rcpt}>: Recipient address not verified, try again later"
S452_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
S500_LINE_TOO_LONG = "500 5.5.2 Line too long"
# Hostile envelopes are refused at the edge, with the reason (the offending characters
# are named by code point, never echoed).
S501_BAD_ARGUMENT = "501 5.5.2 Syntax error: {reason}"
S501_BAD_HELO = "501 5.5.4 Invalid HELO/EHLO hostname: {reason}"
S553_BAD_SENDER = "553 5.1.7 Sender address rejected: {reason}"
S553_BAD_RECIPIENT = "553 5.1.3 Recipient address rejected: {reason}"
S550_NO_SUCH_USER = "550 5.1.1 <{rcpt}>: Recipient address rejected: no such user"
S550_REJECTED = "550 5.7.1 Message rejected: {reason}"
S552_TOO_BIG = "552 5.3.4 Message size exceeds the fixed limit of {limit} bytes"
S554_RELAY_DENIED = "554 5.7.1 <{rcpt}>: Relay access denied"

# aiosmtpd's text -> ours (same code, with an enhanced status code and a clearer text).
REWRITE: dict[str, str] = {
    "552 Error: Too much mail data": S552_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": S552_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": S500_LINE_TOO_LONG,
    "500 Command line too long": S500_LINE_TOO_LONG,
}
