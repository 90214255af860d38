package com.yammer.metrics.reporting;
import com.yammer.metrics.core.Metric;
import com.yammer.metrics.core.MetricName;
import com.yammer.metrics.core.MetricsRegistry;
/** Stand-in: registers nothing with JMX. */
public class JmxReporter {
    private final MetricsRegistry registry;
    public JmxReporter(MetricsRegistry registry) { this.registry = registry; }
    protected MetricsRegistry getMetricsRegistry() { return registry; }
    public void onMetricAdded(MetricName name, Metric metric) { }
    public void onMetricRemoved(MetricName name) { }
    public void start() { }
    public void shutdown() { }
}
