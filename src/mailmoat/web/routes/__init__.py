"""One router per resource; the console pages (pages.py) and digest links (links.py)."""
