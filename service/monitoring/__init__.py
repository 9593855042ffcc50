"""The monitoring room: drift against the frozen BN statistics (drift/) and the Prometheus metrics
(metrics.py). Never imports service.http."""
