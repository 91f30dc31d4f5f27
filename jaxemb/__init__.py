"""jaxemb: how embeddings are compared — every score a dot product after a feature map."""

__version__ = "0.1.0"
