"""Label Studio ML backend for sugfw (the HTTP adapter; the library lives in ``sugfw``)."""
