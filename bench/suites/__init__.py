"""Suites: real datasets read from their standard layouts and the embedded synthetic ones."""

from bench.suites.base import IGNORE, SUITES, Sample, Suite

# Registered lazily so that listing suites imports nothing heavy.
SUITES.register_lazy("refcoco", "bench.suites.refer:RefCOCO")
SUITES.register_lazy("refcoco+", "bench.suites.refer:RefCOCOPlus")
SUITES.register_lazy("refcocog", "bench.suites.refer:RefCOCOg")
SUITES.register_lazy("reasonseg", "bench.suites.reasonseg:ReasonSegSuite")
SUITES.register_lazy("synthref", "bench.synth.suites:SynthRefSuite")
SUITES.register_lazy("synthreason", "bench.synth.suites:SynthReasonSuite")

__all__ = ["IGNORE", "SUITES", "Sample", "Suite"]
