"""Storage side of modelkin: blobs, safe weight files, manifests, the Registry facade, HF import/export."""
