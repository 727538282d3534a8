"""Prometheus metrics of the chat side, on a registry of our own (served at /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
INBOUND = Counter("recon_inbound_requests", "Inbound platform requests by outcome.",
                  ["platform", "outcome"], registry=REGISTRY)
INBOUND_SECONDS = Histogram("recon_inbound_seconds", "Time to answer an inbound platform request.",
                            ["platform"], registry=REGISTRY,
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5))
ACTIONS = Counter("recon_actions", "Button actions by action and outcome.", ["action", "status"], registry=REGISTRY)
OUTBOUND = Counter("recon_outbound_calls", "Calls to platform APIs by outcome.", ["platform", "outcome"],
                   registry=REGISTRY)
IMAGES = Counter("recon_chart_images", "Chart images for chat answers: attached, or sent as text instead.",
                 ["platform", "outcome"], registry=REGISTRY)
