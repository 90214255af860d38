package com.yammer.metrics.core;
import java.util.Collections;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.TimeUnit;
public class MetricsRegistry {
    private final ConcurrentSkipListMap<MetricName, Metric> metrics = new ConcurrentSkipListMap<>();
    @SuppressWarnings("unchecked")
    private <T extends Metric> T getOrAdd(MetricName name, T metric) {
        Metric existing = metrics.putIfAbsent(name, metric);
        return existing == null ? metric : (T) existing;
    }
    public <T> Gauge<T> newGauge(MetricName name, Gauge<T> gauge) { return getOrAdd(name, gauge); }
    public Meter newMeter(MetricName name, String eventType, TimeUnit unit) { return getOrAdd(name, new Meter(eventType, unit)); }
    public Histogram newHistogram(MetricName name, boolean biased) { return getOrAdd(name, new Histogram()); }
    public Timer newTimer(MetricName name, TimeUnit durationUnit, TimeUnit rateUnit) { return getOrAdd(name, new Timer(durationUnit, rateUnit)); }
    public void removeMetric(MetricName name) { metrics.remove(name); }
    public Map<MetricName, Metric> allMetrics() { return Collections.unmodifiableMap(metrics); }
    public void shutdown() { }
}
