package io.opentelemetry.proto.metrics.v1;
public final class ScopeMetrics {
    public static Builder newBuilder() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public static final class Builder {
        public Builder addMetrics(Metric v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public ScopeMetrics build() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    }
}
