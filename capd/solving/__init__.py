"""Queue, leases and the built-in OCR."""
