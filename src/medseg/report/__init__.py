"""Reports: figures (curves, overlays) built from the engine's tables."""
