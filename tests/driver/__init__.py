"""The driver over in-memory streams, against a scripted fake broker."""
