"""The REST API (pecan), with the auth and stream endpoints."""
