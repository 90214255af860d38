package com.yammer.metrics;
import com.yammer.metrics.core.MetricsRegistry;
/** Minimal stand-in for Yammer Metrics 2.2's Metrics (see bench/kafka_peer/shims/README.md): a process-wide registry. */
public final class Metrics {
    private static final MetricsRegistry DEFAULT = new MetricsRegistry();
    private Metrics() { }
    public static MetricsRegistry defaultRegistry() { return DEFAULT; }
}
