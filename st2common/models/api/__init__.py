"""API shapes: JSON Schemas of request bodies, documents as responses, secrets masked on the way out."""
