"""The dump tree: names, the atomic writer, MANIFEST.json, CHECKSUMS, KEYMAP.jsonl, verify."""
