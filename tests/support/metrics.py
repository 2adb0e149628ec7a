"""Reading a Prometheus text exposition in tests: samples by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Samples:
    """Every sample of one scrape: (name, labels, value)."""

    samples: list[tuple[str, dict[str, str], float]]

    @property
    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}

    def _matching(self, name: str, labels: dict[str, str]) -> list[float]:
        return [
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= sample_labels.items()
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample with this name (and these labels)."""
        (found,) = self._matching(name, labels)
        return found

    def values(self, name: str, **labels: str) -> list[float]:
        return self._matching(name, labels)

    def sum(self, name: str, **labels: str) -> float:
        return sum(self._matching(name, labels))

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [labels for sample, labels, _ in self.samples if sample == name]

    def label_values(self, name: str, label: str) -> set[str]:
        return {labels[label] for labels in self.labels_of(name) if label in labels}


def parse_metrics(text: str) -> Samples:
    return Samples(
        [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    )
