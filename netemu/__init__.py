"""netemu: a Kubernetes Service data plane built for real on one Linux machine."""
__version__ = "0.1.0"
