"""kiosk-edge runtime: the store box. Never imports torch, transformers or quantize/."""

__version__ = "0.1.0"
