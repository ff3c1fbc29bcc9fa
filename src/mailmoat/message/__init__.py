"""The message model: envelope, parsed headers, bodies, URLs and attachments."""

from mailmoat.message.model import Address, Attachment, Direction, Envelope, ParsedMessage, Url
from mailmoat.message.parse import parse_message

__all__ = ["Address", "Attachment", "Direction", "Envelope", "ParsedMessage", "Url", "parse_message"]
