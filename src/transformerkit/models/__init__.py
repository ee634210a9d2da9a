"""Model families composed from :mod:`transformerkit.nn`."""
