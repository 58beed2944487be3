"""The engine: snapshot reading, the decode pipeline, the dump tree and the encoder."""
