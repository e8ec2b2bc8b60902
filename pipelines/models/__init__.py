"""Model weights shipped with OncoAgent: a manifest of name, version, file and sha256, checked on load."""
