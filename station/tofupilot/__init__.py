"""TofuPilot reporting: the v2 run body (`payload`), the HTTP client and the upload outbox."""
