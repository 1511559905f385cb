"""kiosk-edge build side: turns models and labelled data into verified edge bundles."""

__version__ = "0.1.0"
