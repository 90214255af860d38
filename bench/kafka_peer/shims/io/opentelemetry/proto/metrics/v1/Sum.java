package io.opentelemetry.proto.metrics.v1;
public final class Sum {
    public static final class Builder {
        public Builder setAggregationTemporality(AggregationTemporality v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder setIsMonotonic(boolean v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder addDataPoints(NumberDataPoint.Builder v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder addDataPoints(NumberDataPoint v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    }
}
