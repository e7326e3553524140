"""Prometheus metrics. One registry per app so tests and several apps in a process don't clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages_in = Counter(
            "kizuna_messages_in", "Messages received", ["platform", "chat_kind"],
            registry=self.registry,
        )
        self.messages_out = Counter(
            "kizuna_messages_out", "Message parts delivered", ["platform"],
            registry=self.registry,
        )
        self.send_errors = Counter(
            "kizuna_send_errors", "Failed send attempts", ["platform", "kind"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "kizuna_rate_limited", "429 Too Many Requests answers from the platform",
            ["platform"], registry=self.registry,
        )
        self.updates_skipped = Counter(
            "kizuna_updates_skipped", "Inbound updates skipped as malformed or unknown",
            ["platform", "reason"], registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "kizuna_handling_seconds", "Time to handle one inbound event", ["platform"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
