"""The HTTP API (Quart-Trio on Hypercorn): JSON bodies `{"data": ...}`, errors `{"error": ...}`."""
