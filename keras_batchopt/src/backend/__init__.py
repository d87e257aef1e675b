"""Backend-specific fast paths. Nothing here imports a framework at import."""
