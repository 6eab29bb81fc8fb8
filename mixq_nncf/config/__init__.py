"""The experiment config: frozen dataclasses read from JSON (mixq's own format or an NNCF 2.x quantization config),
validated with errors that name the key path, and the per-layer precision plan resolved from it."""
